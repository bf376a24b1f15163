"""``evomerge merge`` end to end on tiny models, and its one-line errors."""

from __future__ import annotations

from click.testing import CliRunner
import yaml

from evomerge.cli import _load_verbs, cli
from evomerge.recipe import recipe_from_yaml

_load_verbs()


def _recipe(tmp_path, models, **params):
    text = yaml.safe_dump({"method": "ties", "base": models["base"],
                           "models": [{"model": models["a"], "params": {"weight": 0.6}},
                                      {"model": models["b"], "params": {"weight": 0.4}}],
                           "params": {"density": 0.5, **params},
                           "overrides": [{"layers": [0, 2], "params": {"weight": 0.9}}]})
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_merge_cli_writes_hf_folder(tiny_models, tmp_path):
    path = _recipe(tmp_path, tiny_models)
    res = CliRunner().invoke(cli, ["merge", str(path), str(tmp_path / "out"), "--dtype", "bfloat16",
                                   "--shard-size", "50KB"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    assert len(list(out.glob("model-*-of-*.safetensors"))) > 1
    assert (out / "model.safetensors.index.json").exists()
    assert recipe_from_yaml(str(out / "merge_recipe.yaml")).method == "ties"
    assert yaml.safe_load((out / "mergekit_config.yml").read_text())["merge_method"] == "ties"
    from transformers import AutoModelForCausalLM
    import torch

    model = AutoModelForCausalLM.from_pretrained(out)
    assert next(model.parameters()).dtype == torch.bfloat16


def test_merge_cli_bad_input_is_one_line(tiny_models, tmp_path):
    path = _recipe(tmp_path, tiny_models, density=1.5)
    res = CliRunner().invoke(cli, ["merge", str(path), str(tmp_path / "out")])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and "density=1.5 is outside (0.0, 1.0]" in res.output
    res = CliRunner().invoke(cli, ["merge", str(tmp_path / "missing.yaml"), str(tmp_path / "out")])
    assert res.exit_code == 2 and "recipe file not found" in res.output


def test_merge_cli_stacks_layers_of_models_of_different_depths(tiny_models, tmp_path):
    """A mergekit passthrough config (detected, no --from-mergekit) over a 4-layer and a 2-layer model."""
    from tiny_llama import make_tiny_llama

    make_tiny_llama(tmp_path / "shallow", 5, layers=2)
    mk = {"merge_method": "passthrough", "dtype": "float32", "slices": [
        {"sources": [{"model": tiny_models["a"], "layer_range": [0, 3]}]},
        {"sources": [{"model": str(tmp_path / "shallow"), "layer_range": [1, 2]}]}]}
    (tmp_path / "stack.yml").write_text(yaml.safe_dump(mk))
    res = CliRunner().invoke(cli, ["merge", str(tmp_path / "stack.yml"), str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "merged a data-flow path of 4 layer(s) from 2 model(s)" in res.output
    assert (tmp_path / "out" / "mergekit_config.yml").exists()


def test_merge_cli_summary_counts_the_base(tiny_models, tmp_path):
    text = yaml.safe_dump({"method": "slerp", "base": tiny_models["base"], "models": [{"model": tiny_models["a"]}],
                           "params": {"t": 0.3}})
    (tmp_path / "slerp.yaml").write_text(text)
    res = CliRunner().invoke(cli, ["merge", str(tmp_path / "slerp.yaml"), str(tmp_path / "out"), "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "merged slerp of 2 model(s) (base + 1)" in res.output
    assert recipe_from_yaml(str(tmp_path / "out" / "merge_recipe.yaml")).seed == 3
