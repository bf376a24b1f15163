"""The README stays short and true: at most 250 lines; every `evomerge` command in it parses as written (verbs
and options exist), the cheap ones run (offline), and its job config is the shipped experiment's."""

import re
import shlex
from pathlib import Path

import click
import yaml
from click.testing import CliRunner

from evomerge.cli import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CHEAP = {"plan"}  # reads the shipped config's architecture block: no models, no network


def _commands() -> list[list[str]]:
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("evomerge "):
                out.append(shlex.split(line)[1:])
    return out


def test_readme_is_short():
    assert len(README.splitlines()) <= 250


def test_every_readme_command_parses_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cmds = _commands()
    assert len(cmds) >= 6
    for args in cmds:
        for a in args:  # run folders the commands name exist (click checks them while parsing)
            if a.startswith("runs/"):
                (tmp_path / a).mkdir(parents=True, exist_ok=True)
        verb = cli.get_command(click.Context(cli), args[0])
        assert verb is not None, f"README names an unknown verb: evomerge {' '.join(args)}"
        verb.make_context(args[0], list(args[1:]))  # raises on an unknown option or a bad value


def test_the_cheap_readme_commands_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in _commands():
        if args[0] in CHEAP:
            res = CliRunner().invoke(cli, args)
            assert res.exit_code == 0, (args, res.output)


def test_the_readme_job_config_is_the_shipped_one():
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", README, re.S) if "qwen2.5_1.5b_trio" in b)
    shown = yaml.safe_load(block)
    shipped = yaml.safe_load((ROOT / "experiments" / "qwen2.5_1.5b_trio.yaml").read_text())
    assert shown == {k: v for k, v in shipped.items() if k in shown}
    assert set(shipped) - set(shown) <= {"seed", "architecture"}
