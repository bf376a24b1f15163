import pytest
from click.testing import CliRunner

import evomerge.zoo.cli  # noqa: F401  registers `evomerge zoo`
from evomerge.cli import cli
from evomerge.zoo.report import acceptance, render_table, zoo_report


def _row(model, kind, add, rev, mean=None):
    scores = {"add": add, "reverse": rev}
    return {"model": model, "kind": kind, "scores": scores, "mean": mean if mean is not None else (add + rev) / 2}


def test_acceptance_rules():
    base = _row("base", "base", 10, 10)
    experts = [_row("add", "expert", 60, 5), _row("reverse", "expert", 5, 70)]
    assert acceptance([base, *experts, _row("avg", "merge", 50, 50)]).passed
    assert not acceptance([base, *experts, _row("avg", "merge", 30, 40)]).passed  # 35 < 37.5
    weak = [_row("add", "expert", 25, 5), _row("reverse", "expert", 5, 70)]  # +15 on its own skill
    assert not acceptance([base, *weak, _row("avg", "merge", 50, 50)]).passed
    assert "add +15.0" in acceptance([base, *weak]).message


def test_report_on_ci_zoo(ci_zoo):
    rows = zoo_report(ci_zoo, limit=8)
    kinds = [r["kind"] for r in rows]
    assert kinds[:4] == ["base", "expert", "expert", "expert"] and kinds.count("merge") == 5
    assert {r["model"] for r in rows} >= {"base", "add", "reverse", "sort", "average", "task_arithmetic 1.0"}
    for r in rows:
        assert set(r["scores"]) == {"add", "reverse", "sort"}
        assert all(0 <= v <= 100 and (v * 8 / 100) == pytest.approx(round(v * 8 / 100)) for v in r["scores"].values())
        assert r["mean"] == pytest.approx(sum(r["scores"].values()) / 3)
    assert render_table(rows).row_count == len(rows)


def test_cli_report_prints_table_and_json(ci_zoo, tmp_path):
    out = tmp_path / "report.json"
    res = CliRunner().invoke(cli, ["zoo", "report", str(ci_zoo), "--limit", "4", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "task_arithmetic 0.5" in res.output and "acceptance:" in res.output
    assert out.is_file()
