"""The ``evomerge`` command line. Each verb group lives in its own module and registers here."""

from __future__ import annotations

import logging
import os
import sys

import click

from evomerge.errors import EvomergeError


class _Group(click.Group):
    """Turns EvomergeError into one clear line on stderr and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EvomergeError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=_Group)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """evomerge: search for LLM merge recipes."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        logging.getLogger("lm_eval").setLevel(max(level, logging.ERROR))
    else:  # main() quietened transformers by default; -vv wants its warnings back
        import transformers

        transformers.logging.set_verbosity_warning()


# Verb modules: each defines click commands/groups and adds them to ``cli``.
_VERB_MODULES = (
    "evomerge.zoo.cli",
    "evomerge.merge.cli",
    "evomerge.run.cli",
    "evomerge.plan_cli",
)


def _load_verbs() -> None:
    import importlib

    for mod in _VERB_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:  # a real missing dependency inside an existing module
                raise


def main(argv: list[str] | None = None) -> None:
    # lm-eval draws a tqdm bar per request batch; our own progress bars say enough (TQDM_DISABLE=0 shows them).
    # tqdm reads the variable when it is imported, so before any verb module loads.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read by transformers when imported, like tqdm
    _load_verbs()
    cli.main(args=argv, prog_name="evomerge")


if __name__ == "__main__":
    sys.exit(main())
