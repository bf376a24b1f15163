"""``python -m evomerge``: the ``evomerge`` command line."""

from evomerge.cli import main

if __name__ == "__main__":
    main()
