"""Every common architecture: tiny random-init models (base + two fine-tunes, ``save_pretrained``) of each.

For each row: a per-layer TIES recipe merged in memory (into a ``from_pretrained`` live model, names mapped the
way transformers loads them) equals the exported checkpoint loaded back, bit for bit, in float32 and bfloat16;
a two-block task-arithmetic recipe changes each block by its own coefficient; data-flow merging is supported
or refused in one line; mergekit gives the same export. The architecture table of docs/architectures.md is this test's output:
``test_readme_table_is_generated`` fails (printing the table) when they differ.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from evomerge.errors import EvomergeError
from evomerge.merge import InMemoryMerger, export_recipe, to_mergekit_yaml
from evomerge.models.compat import layout_of
from evomerge.models.safetensors_io import LazyCheckpoint
from evomerge.recipe import recipe_from_dict

_COMMON = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=64)
ARCHS = {  # row name -> (config class, fields)
    "Llama": ("LlamaConfig", dict(_COMMON, tie_word_embeddings=False)),
    "Llama (tied)": ("LlamaConfig", dict(_COMMON, tie_word_embeddings=True)),
    "Mistral": ("MistralConfig", _COMMON),
    "Mixtral": ("MixtralConfig", dict(_COMMON, num_local_experts=4, num_experts_per_tok=2)),
    "Qwen2": ("Qwen2Config", _COMMON),
    "Qwen3": ("Qwen3Config", dict(_COMMON, head_dim=8)),
    "Gemma": ("GemmaConfig", dict(_COMMON, head_dim=8)),
    "Gemma2": ("Gemma2Config", dict(_COMMON, head_dim=8)),
    "Gemma3": ("Gemma3TextConfig", dict(_COMMON, head_dim=8)),
    "Phi3": ("Phi3Config", dict(_COMMON, pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    "OLMo2": ("Olmo2Config", dict(_COMMON, pad_token_id=0, eos_token_id=2)),
    "GPT-NeoX": ("GPTNeoXConfig", dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, max_position_embeddings=64,
                                        tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)),
    "GPT-2": ("GPT2Config", dict(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0,
                                 eos_token_id=0)),
}
DTYPES = ("float32", "bfloat16")
MLP = ["mlp", "block_sparse_moe"]  # the MLP role of every row (Mixtral's MLP is its experts)


def make_set(root: Path, arch: str, dtype: str) -> dict[str, str]:
    import transformers
    from transformers import AutoModelForCausalLM

    cls, fields = ARCHS[arch]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(getattr(transformers, cls)(**fields)).to(getattr(torch, dtype))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out = {}
    for i, name in enumerate(("base", "ft1", "ft2")):
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for k, p in model.named_parameters():
                p.copy_(state[k] + (0.05 * torch.randn(p.shape, generator=g)).to(p.dtype) * (i > 0))
        model.save_pretrained(root / name)
        out[name] = str(root / name)
    return out


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("archs")
    cache: dict = {}

    def get(arch: str, dtype: str) -> dict[str, str]:
        if (arch, dtype) not in cache:
            folder = root / re.sub(r"\W+", "_", arch) / dtype
            cache[arch, dtype] = make_set(folder, arch, dtype)
        return cache[arch, dtype]

    return get


def ties_recipe(m: dict, dtype: str):
    return recipe_from_dict({
        "method": "ties", "base": m["base"], "dtype": dtype,
        "models": [{"model": m["ft1"], "params": {"weight": 0.6, "density": 0.7}},
                   {"model": m["ft2"], "params": {"weight": 0.4, "density": 0.5}}],
        "overrides": [{"layers": [0, 1], "params": {"weight": 0.9}},
                      {"layers": [1, 2], "modules": MLP, "model": m["ft2"], "params": {"density": 0.3}}]})


def two_block_recipe(m: dict):
    return recipe_from_dict({
        "method": "task_arithmetic", "base": m["base"], "models": [{"model": m["ft1"]}],
        "overrides": [{"layers": [0, 1], "params": {"weight": 0.25}}, {"layers": [1, 2], "params": {"weight": 0.75}}]})


def in_memory_equals_export(m: dict, dtype: str, tmp: Path) -> None:
    from transformers import AutoModelForCausalLM

    recipe = ties_recipe(m, dtype)
    merger = InMemoryMerger(recipe.sources(), cache_budget=0)
    live = AutoModelForCausalLM.from_pretrained(m["base"], dtype=getattr(torch, dtype))
    merger.merge_into(recipe, live)
    export_recipe(recipe, tmp / f"export-{dtype}")
    exported = AutoModelForCausalLM.from_pretrained(tmp / f"export-{dtype}", dtype=getattr(torch, dtype)).state_dict()
    got = live.state_dict()
    assert set(got) == set(exported)
    for k in got:
        assert got[k].dtype == exported[k].dtype == getattr(torch, dtype)
        assert torch.equal(got[k], exported[k]), f"{k} differs between the scored and the exported model"


def blocks_differ(m: dict, tmp: Path) -> None:
    out = export_recipe(two_block_recipe(m), tmp / "two_block")
    merged, base, ft = (LazyCheckpoint(str(p)) for p in (out, m["base"], m["ft1"]))
    layout = layout_of(base)
    assert layout.num_layers == 2
    seen = set()
    for name in base.names():
        layer = layout.layer_of(name)
        if layer is None:
            continue
        d = ft.get(name, torch.float64) - base.get(name, torch.float64)
        big = d.abs() > 1e-3
        if big.sum() < 10:
            continue
        ratio = ((merged.get(name, torch.float64) - base.get(name, torch.float64))[big] / d[big]).median()
        assert abs(float(ratio) - (0.25, 0.75)[layer]) < 0.01, (name, float(ratio))
        seen.add(layer)
    assert seen == {0, 1}


def dataflow_check(m: dict) -> str:
    from evomerge.dataflow.sources import check_compatible
    from evomerge.recipe.dataflow import DataFlowRecipe

    r = DataFlowRecipe.model_validate({"models": {"a": m["ft1"], "b": m["ft2"]},
                                       "path": [["a", 0], ["b", 1, 0.9], ["a", 1]]})
    try:
        check_compatible(r)
    except EvomergeError as exc:
        assert "\n" not in str(exc)
        return "refused (one line)"
    return "yes"


def mergekit_check(m: dict, tmp: Path) -> str:
    mergekit = pytest.importorskip("mergekit")  # noqa: F841
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    recipe = ties_recipe(m, "float32")
    ours = LazyCheckpoint(str(export_recipe(recipe, tmp / "ours")))
    try:
        cfg = MergeConfiguration.model_validate(yaml.safe_load(to_mergekit_yaml(recipe)))
        run_merge(cfg, str(tmp / "mk"), MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False))
    except Exception as exc:  # mergekit does not know this architecture
        return f"mergekit: {type(exc).__name__}"
    theirs = LazyCheckpoint(str(tmp / "mk"))
    if set(theirs.names()) != set(ours.names()):
        return "mergekit: other tensor names"
    worst = max(float((ours.get(n, torch.float32) - theirs.get(n, torch.float32)).abs().max()) for n in ours.names())
    return f"yes ({worst:.0e})" if worst <= 1e-6 else f"no ({worst:.0e})"


# The docs table test below runs these same checks for every row; the parametrised tests (slow: the work is
# done twice) give a per-architecture failure with its traceback.
@pytest.mark.slow
@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_in_memory_merge_is_the_exported_model(arch, dtype, sets, tmp_path):
    in_memory_equals_export(sets(arch, dtype), dtype, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(ARCHS))
def test_two_block_recipe_changes_each_block_by_its_coefficient(arch, sets, tmp_path):
    blocks_differ(sets(arch, "float32"), tmp_path)


def architecture_table(sets, tmp: Path) -> str:
    rows = ["| architecture | export merge | in-memory search merge (== export, fp32 + bf16) | per-layer spaces | "
            "data-flow | mergekit parity (max abs diff) |", "|---|---|---|---|---|---|"]
    for arch in ARCHS:
        m = sets(arch, "float32")
        work = tmp / re.sub(r"\W+", "_", arch)
        work.mkdir()
        cells = []
        for check in (lambda: export_recipe(ties_recipe(m, "float32"), work / "e"),
                      lambda: [in_memory_equals_export(sets(arch, d), d, work / d) for d in DTYPES],
                      lambda: blocks_differ(m, work)):
            try:
                check()
                cells.append("yes")
            except (EvomergeError, AssertionError) as exc:
                cells.append(f"no: {str(exc).splitlines()[0][:60]}")
        cells += [dataflow_check(m), mergekit_check(m, work)]
        rows.append(f"| {arch} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def test_docs_table_is_generated(sets, tmp_path):
    table = architecture_table(sets, tmp_path)
    page = (Path(__file__).resolve().parents[1] / "docs" / "architectures.md").read_text()
    m = re.search(r"<!-- architecture-table -->\n(.*?)\n<!-- /architecture-table -->", page, re.S)
    assert m is not None, "docs/architectures.md lacks the architecture table markers"
    assert m.group(1).strip() == table, f"docs/architectures.md table is stale; this run gives:\n{table}"


@pytest.mark.parametrize("arch", list(ARCHS))
def test_module_roles_name_the_same_modules_in_every_architecture(sets, arch):
    """The attention and MLP roles of the shipped per-module presets each match that architecture's own
    attention / MLP tensors in every block (GPT-2's attn.c_attn, NeoX's attention.query_key_value, ...), and
    nothing else; a literal filter the architecture does not use is refused in one line."""
    from evomerge.errors import ConfigError
    from evomerge.models.roles import check_module_entries, expand_modules, matching

    m = sets(arch, "float32")
    ck = LazyCheckpoint(m["base"])
    names, layout = ck.names(), layout_of(ck)
    attn, mlp = (set(matching(expand_modules([r]), names)) for r in ("attention", "mlp"))
    for i in range(layout.num_layers):
        block = [n for n in names if layout.layer_of(n) == i]
        assert any(n in attn for n in block) and any(n in mlp for n in block), (arch, i, block)
    module = {n: n[len(layout.prefix) + 1:].split(".")[1] for n in attn | mlp}  # the segment under the block
    layer_norms = [n for n, seg in module.items() if "norm" in seg or seg.startswith("ln_")]
    assert not attn & mlp and not layer_norms, layer_norms  # q_norm / k_norm inside attention belong to it
    check_module_entries(["attention", "mlp"], names, arch)
    if arch in ("GPT-2", "GPT-NeoX"):
        with pytest.raises(ConfigError, match="module filter 'self_attn' matches no tensor"):
            check_module_entries(["self_attn"], names, arch)


@pytest.mark.parametrize("arch", ["GPT-2", "GPT-NeoX"])
def test_a_per_module_preset_on_gpt2_and_neox_changes_attention_and_mlp_separately(sets, arch, tmp_path):
    """The shipped ties_attn_mlp space on GPT-2 / NeoX: its attention weights reach the attention tensors
    (before roles, the self_attn filter matched nothing there and those tensors silently kept the model-level
    weight)."""
    from evomerge.spaces import build_space

    m = sets(arch, "float32")
    space = build_space("task_arithmetic_attn_mlp", base=m["base"], models=[m["ft1"], m["ft2"]])
    point = space.default_point()
    attn_keys = [k for k in point if k.endswith("attention.weight")]
    assert attn_keys, sorted(point)
    for k in point:
        point[k] = 0.0
    for k in attn_keys:
        point[k] = 1.0  # attention deltas only
    recipe = space.decode(point)
    merged = InMemoryMerger([m["base"], m["ft1"], m["ft2"]]).merge_state_dict(recipe)
    base, ft1, ft2 = (LazyCheckpoint(m[k]) for k in ("base", "ft1", "ft2"))
    from evomerge.models.roles import expand_modules, matching

    attn = set(matching(expand_modules(["attention"]), base.names()))
    for name, t in merged.items():
        want = base.get(name) + (ft1.get(name) - base.get(name)) + (ft2.get(name) - base.get(name)) \
            if name in attn else base.get(name)
        torch.testing.assert_close(t, want, rtol=1e-5, atol=1e-6, msg=name)
