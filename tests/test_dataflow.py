"""Data-flow path model and exact export, on tiny random Llama checkpoints written to a temp dir."""

import random

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast)

from evomerge.dataflow import (SourceModels, build_path_model, check_compatible, dataflow_size, export_dataflow,
                               from_mergekit_passthrough, to_mergekit_passthrough)
from evomerge.errors import ConfigError, EvomergeError
from evomerge.recipe import recipe_from_dict

VOCAB = 40
CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 "


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>"] + list(CHARS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def _randomize(model, seed):
    """Larger-than-default random weights, norms and biases so that every tensor matters to the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model


def _llama(folder, seed, layers, hidden=32, tie=False, cls=LlamaForCausalLM, cfg_cls=LlamaConfig, bias=True):
    cfg = cfg_cls(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=48, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  tie_word_embeddings=tie, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                  **({"attention_bias": bias, "mlp_bias": bias} if cfg_cls is LlamaConfig else {}))
    _randomize(cls(cfg), seed).save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    d = tmp_path_factory.mktemp("dfzoo")
    return {
        "a": _llama(d / "a", 0, 4),
        "a2": _llama(d / "a2", 6, 4),
        "b": _llama(d / "b", 1, 3),
        "c": _llama(d / "c", 2, 5),
        "t": _llama(d / "t", 3, 4, tie=True),
        "wide": _llama(d / "wide", 4, 2, hidden=48),
        "mistral": _llama(d / "mistral", 5, 2, cls=MistralForCausalLM, cfg_cls=MistralConfig),
    }


@pytest.fixture(scope="module")
def sources():
    return SourceModels()


def recipe(zoo, path, **kw):
    names = {s[0] for s in path} | {kw.get("embed"), kw.get("head")} - {None}
    return recipe_from_dict({"kind": "dataflow", "models": {n: zoo[n] for n in sorted(names)}, "path": path, **kw})


def ids(seed=0, batch=2, length=12):
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def random_recipe(zoo, seed):
    rng = random.Random(seed)
    layers = {"a": 4, "b": 3, "c": 5, "t": 4}
    path = [[m, rng.randrange(layers[m]), round(rng.lognormvariate(0, 0.6), 4)]
            for m in (rng.choice(list(layers)) for _ in range(rng.randint(1, 10)))]
    return recipe(zoo, path, embed=rng.choice(list(layers)), head=rng.choice(list(layers)))


@pytest.mark.parametrize("name", ["a", "t"])
def test_whole_model_path_reproduces_it_exactly(zoo, sources, name):
    model = build_path_model(recipe(zoo, [[name, i] for i in range(4)]), sources)
    ref = AutoModelForCausalLM.from_pretrained(zoo[name]).eval()
    x = ids()
    with torch.no_grad():
        assert torch.equal(model(x).logits, ref(x).logits)


def test_layers_are_shared_not_copied(zoo, sources):
    r = recipe(zoo, [["a", 1], ["b", 0, 0.5], ["a", 1, 2.0]])
    model = build_path_model(r, sources)
    a, b = sources.get(zoo["a"]), sources.get(zoo["b"])
    layers = model.model.layers
    assert layers[0].self_attn.q_proj.weight is a.model.layers[1].self_attn.q_proj.weight
    # output scales w = [1, 2, 1]: only step 1's branch outputs are wrapped
    assert layers[2].self_attn.o_proj.weight is a.model.layers[1].self_attn.o_proj.weight
    assert layers[1].mlp.down_proj.inner.weight is b.model.layers[0].mlp.down_proj.weight
    assert layers[1].mlp.down_proj.scale == 2.0
    assert model.model.embed_tokens is a.model.embed_tokens and model.lm_head is a.lm_head
    # distinct KV-cache slots for a reused layer
    assert [layer.self_attn.layer_idx for layer in layers] == [0, 1, 2]
    assert layers[0].self_attn is not layers[2].self_attn


@pytest.mark.parametrize("seed", range(6))
def test_wrapper_and_export_logits_agree(zoo, sources, tmp_path, seed):
    r = random_recipe(zoo, seed)
    model = build_path_model(r, sources)
    out = export_dataflow(r, tmp_path / "out")
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(exported) is LlamaForCausalLM and exported.config.num_hidden_layers == len(r.steps())
    x = ids(seed)
    mask = torch.ones_like(x)
    mask[0, :3] = 0  # left padding in the first row
    with torch.no_grad():
        got, want = model(x, attention_mask=mask).logits, exported(x, attention_mask=mask).logits
    assert want.abs().max() > 1.0  # the comparison is not between near-zero logits
    assert (got - want).abs().max().item() < 1e-4


def test_export_writes_reused_layers_as_copies_and_ties_correctly(zoo, tmp_path):
    from safetensors import safe_open

    r = recipe(zoo, [["t", 0], ["t", 0, 0.5], ["t", 3]])
    out = export_dataflow(r, tmp_path / "tied")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        q0, q1 = f.get_tensor("model.layers.0.self_attn.q_proj.weight"), f.get_tensor("model.layers.1.self_attn.q_proj.weight")
        o0, o1 = f.get_tensor("model.layers.0.self_attn.o_proj.weight"), f.get_tensor("model.layers.1.self_attn.o_proj.weight")
    assert torch.equal(q0, q1) and torch.allclose(o1, 2.0 * o0)
    assert "lm_head.weight" not in keys and "model.layers.2.mlp.down_proj.bias" in keys
    assert (out / "tokenizer.json").exists() and (out / "evomerge_recipe.yaml").exists()
    assert AutoModelForCausalLM.from_pretrained(out).config.tie_word_embeddings
    untied = export_dataflow(recipe(zoo, [["t", 0]], head="a"), tmp_path / "untied")
    assert not AutoModelForCausalLM.from_pretrained(untied).config.tie_word_embeddings
    with pytest.raises(EvomergeError, match="not empty"):
        export_dataflow(r, out)


def test_export_shards_and_reloads(zoo, sources, tmp_path):
    r = recipe(zoo, [["a", 0], ["c", 4, 1.5], ["b", 2, 0.6]])
    out = export_dataflow(r, tmp_path / "sharded", shard_bytes=40_000)
    assert (out / "model.safetensors.index.json").exists() and len(list(out.glob("model-*-of-*.safetensors"))) > 1
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        diff = (build_path_model(r, sources)(ids()).logits - exported(ids()).logits).abs().max()
    assert diff < 1e-4


def test_scaling_matches_literal_stream_scaling_when_norm_eps_is_zero(zoo, sources):
    """The fold equals Sakana's 'multiply the hidden state entering step k by s_k' up to RMSNorm's epsilon."""
    path = [["a", 0, 0.3], ["b", 1, 2.5], ["a", 2, 1.7], ["b", 2, 0.4]]
    folded = build_path_model(recipe(zoo, path), sources)
    literal = build_path_model(recipe(zoo, [[m, i] for m, i, _ in path]), sources)
    for layer, (_, _, s) in zip(literal.model.layers, path):
        layer.register_forward_pre_hook(lambda mod, args, s=s: (args[0] * s, *args[1:]))

    def logits(model, eps):
        norms = [m for m in model.modules() if hasattr(m, "variance_epsilon")]
        old = [m.variance_epsilon for m in norms]
        for m in norms:
            m.variance_epsilon = eps
        with torch.no_grad():
            out = model(ids()).logits
        for m, e in zip(norms, old):
            m.variance_epsilon = e
        return out

    want = logits(literal, 0.0)
    assert (logits(folded, 0.0) - want).abs().max() < 1e-5 * want.abs().max()
    # with the checkpoint's epsilon the two differ (tiny random streams): the fold is the recipe's definition
    assert (logits(folded, 1e-6) - logits(literal, 1e-6)).abs().max() > 1e-5


def test_cached_generation_matches_uncached_and_export(zoo, sources, tmp_path):
    r = recipe(zoo, [["a", 0, 0.8], ["b", 1], ["a", 0, 1.3], ["c", 4], ["a", 3, 0.9]])
    model = build_path_model(r, sources)
    exported = AutoModelForCausalLM.from_pretrained(export_dataflow(r, tmp_path / "gen")).eval()
    tok = PreTrainedTokenizerFast.from_pretrained(zoo["a"])
    tok.padding_side = "left"
    batch = tok(["abc", "hello world 42"], return_tensors="pt", padding=True)
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = model.generate(**batch, **kw)
        assert torch.equal(cached, model.generate(**batch, use_cache=False, **kw))
        assert torch.equal(cached, exported.generate(**batch, **kw))
        alone = model.generate(**tok(["abc"], return_tensors="pt"), **kw)  # left padding changes nothing
    assert torch.equal(cached[0, -8:], alone[0, -8:])


def test_hflm_through_wrapper_matches_export(zoo, sources, tmp_path):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    r = recipe(zoo, [["c", 0], ["a", 2, 1.4], ["c", 3, 0.7]])
    tok = PreTrainedTokenizerFast.from_pretrained(zoo["c"])
    out = export_dataflow(r, tmp_path / "hflm")
    lms = [HFLM(pretrained=build_path_model(r, sources), tokenizer=tok, batch_size=2, max_length=64),
           HFLM(pretrained=str(out), batch_size=2, max_length=64, device="cpu")]
    ll = [Instance("loglikelihood", {}, ("abc ", "def"), 0), Instance("loglikelihood", {}, ("x", "yz 1"), 1)]
    gen = [Instance("generate_until", {}, ("hello ", {"until": ["\n"], "max_gen_toks": 6, "do_sample": False}), 0)]
    lls = [lm.loglikelihood(ll) for lm in lms]
    assert [g for _, g in lls[0]] == [g for _, g in lls[1]]
    assert lls[0][0][0] == pytest.approx(lls[1][0][0], abs=1e-4) and lls[0][1][0] == pytest.approx(lls[1][1][0], abs=1e-4)
    texts = [lm.generate_until(gen) for lm in lms]
    assert texts[0] == texts[1] and len(texts[0][0]) > 0


def test_size_objective_counts_exported_parameters(zoo, tmp_path):
    for path, kw in [([["a", 0], ["b", 1, 2.0], ["a", 0]], {}), ([["t", 0], ["t", 1]], {})]:
        r = recipe(zoo, path, **kw)
        size = dataflow_size(r)
        exported = AutoModelForCausalLM.from_pretrained(export_dataflow(r, tmp_path / f"s{len(path)}"))
        assert size.layers == len(path) and size.parameters == exported.num_parameters()


@pytest.mark.parametrize(
    "names, path, msg",
    [
        (("a", "wide"), [["a", 0], ["wide", 0]], "models have different hidden sizes: a=32, wide=48"),
        (("a", "mistral"), [["a", 0], ["mistral", 0]], "models have different architectures: a=llama, mistral=mistral"),
        (("a",), [["a", 0], ["a", 4]], "path step 1: model 'a' has 4 layers, no layer 4"),
    ],
)
def test_incompatible_sources_fail_before_loading(zoo, names, path, msg):
    r = recipe_from_dict({"kind": "dataflow", "models": {n: zoo[n] for n in names}, "path": path})
    src = SourceModels()
    with pytest.raises(EvomergeError) as e:
        build_path_model(r, src)
    assert str(e.value) == msg and not src._models


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "mistral"])
def test_other_supported_architectures_export_exactly(tmp_path, arch):
    from transformers import AutoConfig

    refs = {}
    for name, seed in (("x", 0), ("y", 1)):
        cfg = AutoConfig.for_model(arch, vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
        refs[name] = str(tmp_path / name)
        _randomize(AutoModelForCausalLM.from_config(cfg), seed).save_pretrained(refs[name])
    r = recipe_from_dict({"kind": "dataflow", "models": refs, "path": [["x", 0, 0.7], ["y", 2, 1.4], ["x", 0, 0.9], ["y", 1]]})
    src = SourceModels()
    exported = AutoModelForCausalLM.from_pretrained(export_dataflow(r, tmp_path / "out")).eval()
    assert exported.config.model_type == arch
    with torch.no_grad():
        assert (build_path_model(r, src)(ids()).logits - exported(ids()).logits).abs().max() < 1e-4


def test_unsupported_architecture(tmp_path):
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=VOCAB)).save_pretrained(tmp_path / "g")
    r = recipe_from_dict({"kind": "dataflow", "models": {"g": str(tmp_path / "g")}, "path": [["g", 0]]})
    with pytest.raises(EvomergeError, match="data-flow merging supports llama, mistral, qwen2, qwen3 decoders; model 'g' is 'gpt2'"):
        check_compatible(r)


def test_nested_parameter_space_source(zoo, sources, tmp_path):
    """PS+DFS: a source that is itself a merge recipe behaves like the checkpoint the merge engine exports."""
    from evomerge.merge import export_recipe

    ps = {"kind": "merge", "method": "linear", "models": [{"model": zoo["a"], "params": {"weight": 0.3}},
                                                          {"model": zoo["a2"], "params": {"weight": 0.7}}]}
    path = [["ps", 0], ["b", 1, 0.6], ["ps", 2, 1.5], ["ps", 3]]
    nested = recipe_from_dict({"kind": "dataflow", "models": {"ps": ps, "b": zoo["b"]}, "path": path})
    merged = export_recipe(recipe_from_dict(ps), tmp_path / "ps")
    flat = recipe_from_dict({"kind": "dataflow", "models": {"ps": str(merged), "b": zoo["b"]}, "path": path})
    assert nested.sources() == [zoo["a"], zoo["a2"], zoo["b"]]
    exported = AutoModelForCausalLM.from_pretrained(export_dataflow(nested, tmp_path / "out", sources)).eval()
    with torch.no_grad():
        want = build_path_model(flat, sources)(ids()).logits
        assert (build_path_model(nested, sources)(ids()).logits - want).abs().max() < 1e-5
        assert (exported(ids()).logits - want).abs().max() < 1e-4
    assert dataflow_size(nested) == dataflow_size(flat)


# ---- mergekit passthrough interop --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """Bias-free models: mergekit's Llama architecture table has no bias tensors."""
    d = tmp_path_factory.mktemp("dfplain")
    return {"p": _llama(d / "p", 10, 4, bias=False, tie=True), "q": _llama(d / "q", 11, 3, bias=False)}


def test_mergekit_passthrough_round_trip_and_equivalence(plain, sources, tmp_path):
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    r = recipe(plain, [["p", 0], ["p", 1], ["q", 1], ["q", 2], ["p", 3], ["q", 0]])
    text = to_mergekit_passthrough(r)
    doc = yaml.safe_load(text)
    assert [s["sources"][0]["layer_range"] for s in doc["slices"]] == [[0, 2], [1, 3], [3, 4], [0, 1]]
    back = from_mergekit_passthrough(text)
    assert [(back.models[s.model], s.layer) for s in back.steps()] == [(plain[s.model], s.layer) for s in r.steps()]
    run_merge(MergeConfiguration.model_validate(doc), str(tmp_path / "mk"), MergeOptions(copy_tokenizer=True))
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "mk").eval()
    with torch.no_grad():
        assert (build_path_model(r, sources)(ids()).logits - theirs(ids()).logits).abs().max() < 1e-5


def test_mergekit_passthrough_refuses_what_it_cannot_express(plain):
    with pytest.raises(EvomergeError, match="cannot express scaled steps"):
        to_mergekit_passthrough(recipe(plain, [["p", 0, 0.5]]))
    with pytest.raises(EvomergeError, match="embed/head differ"):
        to_mergekit_passthrough(recipe(plain, [["p", 0]], head="q"))
    nested = recipe_from_dict({"kind": "dataflow", "path": [["m", 0]], "models": {
        "m": {"kind": "merge", "method": "linear", "models": [{"model": plain["p"]}]}}})
    with pytest.raises(EvomergeError, match="nested merge recipe"):
        to_mergekit_passthrough(nested)
    with pytest.raises(ConfigError, match="not a mergekit passthrough config"):
        from_mergekit_passthrough("merge_method: ties\nmodels: []\n")
    with pytest.raises(ConfigError, match="slice 0: passthrough needs exactly one source"):
        from_mergekit_passthrough("merge_method: passthrough\nslices: [{sources: [{model: x}]}]\n")
