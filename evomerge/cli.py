"""The ``evomerge`` command line: one click group whose verbs live in their own modules, imported lazily.

Adding a verb: write a module that does ``from evomerge.cli import cli`` and decorates its commands with
``@cli.command(...)`` / ``@cli.group(...)``, then add one line to ``VERBS`` below (verb name -> module, short
help). The module is imported only when its verb runs (or when ``--help`` of that verb is asked), so
``evomerge --help`` and quick verbs never import torch, transformers or lm-eval. Verb modules must keep their
own top-level imports light and import heavy libraries inside the command functions.

Error contract (``_Group.main``): every failure ends in exactly one ``error: ...`` line on stderr and exit 2,
whether it is a bad input (``EvomergeError``), a usage error (click) or an unexpected internal error (the
line says so and names a log file under ``$EVOMERGE_HOME/logs`` that holds the traceback). Ctrl-C exits 130.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings

import click

from evomerge.errors import EvomergeError

# verb -> (module that registers it on ``cli``, one-line help shown by ``evomerge --help``)
VERBS: dict[str, tuple[str, str]] = {
    "bank": ("evomerge.fitness.bank_cli", "Item banks as files: show one, merge two."),
    "check": ("evomerge.run.cli", "Preflight a job config: every check that needs no compute."),
    "dashboard": ("evomerge.tracking.cli", "optuna-dashboard on a run: trials, history, Pareto front, live."),
    "demo": ("evomerge.run.cli", "Build the tiny zoo if missing, search a merge recipe, compare on TEST."),
    "export": ("evomerge.run.cli", "Re-evaluate the chosen candidates on the TEST split and write them out."),
    "merge": ("evomerge.merge.cli", "Merge a recipe (evomerge or mergekit YAML) into an HF folder."),
    "plan": ("evomerge.execution.plan_cli", "Memory plan of a job per worker and per node, before any compute."),
    "report": ("evomerge.run.cli", "One self-contained HTML page of a run: progress, front, winner, finalists."),
    "resume": ("evomerge.run.cli", "Continue a run from its latest intact checkpoint."),
    "run": ("evomerge.run.cli", "Run the search (or staged job) described by CONFIG."),
    "status": ("evomerge.run.cli", "Progress, best candidates and Pareto front of a run."),
    "zoo": ("evomerge.zoo.cli", "The tiny model zoo: a char-level Llama base and one expert per skill."),
}
EXIT_ERROR = 2
log = logging.getLogger(__name__)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).strip().splitlines() if part.strip()) or "failed"


def _crash_log(exc: BaseException) -> str:
    """Write the traceback of an unexpected error to a log file; returns its path."""
    import datetime
    import traceback

    from evomerge.resources import home

    try:
        folder = home() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = folder / f"error-{stamp}-{os.getpid()}.log"
        path.write_text(f"evomerge {' '.join(sys.argv[1:])}\n\n"
                        + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return str(path)
    except OSError:
        import tempfile

        fd, path = tempfile.mkstemp(prefix="evomerge-error-", suffix=".log")
        with os.fdopen(fd, "w") as fh:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=fh)
        return path


class _Group(click.Group):
    """Lazily imported verbs (``VERBS``) and the one-line error contract."""

    def list_commands(self, ctx):
        return sorted(set(self.commands) | set(VERBS))

    def get_command(self, ctx, name):
        if name not in self.commands and name in VERBS:
            try:
                importlib.import_module(VERBS[name][0])
            except ModuleNotFoundError as exc:
                if exc.name != VERBS[name][0]:  # a real missing dependency inside an existing module
                    raise
        return self.commands.get(name)

    def format_commands(self, ctx, formatter):
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                cmd = self.commands[name]
                if cmd.hidden:
                    continue
                rows.append((name, cmd.get_short_help_str(formatter.width - 6 - len(name))))
            else:
                rows.append((name, VERBS[name][1]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        # lm-eval draws a tqdm bar per request batch; our own progress bars say enough (TQDM_DISABLE=0 shows
        # them). tqdm and transformers read these when imported, so before any verb module loads.
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except EvomergeError as exc:
            code = self._fail(_one_line(exc))
        except click.exceptions.ClickException as exc:
            code = self._fail(_one_line(exc.format_message()))
        except (KeyboardInterrupt, click.exceptions.Abort):
            code = self._fail("interrupted", 130)
        except Exception as exc:  # a bug: one line here, the traceback in a file (a full disk: one line)
            from evomerge.fsutil import NO_SPACE

            if isinstance(exc, OSError) and exc.errno in NO_SPACE:
                code = self._fail(f"no space left on the device ({exc.filename or exc.strerror}); what was "
                                  "written before it is kept")
            else:
                path = _crash_log(exc)
                code = self._fail(f"internal error ({type(exc).__name__}: {_one_line(exc)[:300]}); "
                                  f"traceback in {path}")
        if standalone_mode:
            sys.exit(code)
        return code

    @staticmethod
    def _fail(message: str, code: int = EXIT_ERROR) -> int:
        click.echo(f"error: {message}", err=True)
        return code


@click.group(cls=_Group)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """evomerge: search for LLM merge recipes."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # third-party warnings (deprecations inside transformers, lm-eval, ...) say nothing a user
        warnings.filterwarnings("ignore")  # can act on; ours stay (what to do, in one line); -v shows them all
        warnings.filterwarnings("default", module=r"evomerge(\.|$)")
    if verbose < 2:
        logging.getLogger("lm_eval").setLevel(max(level, logging.ERROR))
    else:  # main() quietened transformers by default; -vv wants its warnings back
        import transformers

        transformers.logging.set_verbosity_warning()


def _load_verbs() -> None:
    """Import every verb module now (tests and tools that want ``cli.commands`` filled)."""
    for module in dict.fromkeys(m for m, _ in VERBS.values()):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="evomerge")


if __name__ == "__main__":  # ``python -m evomerge.cli``: run the importable module's group, where verbs register
    from evomerge.cli import main as _main

    _main()
