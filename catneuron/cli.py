"""``catneuron``: one console script, one module per subcommand in :mod:`catneuron.commands`.

Each command module defines ``register(subparsers)``, which adds its parser and sets
``func(args) -> int`` (the exit code). Adding a command is adding its module name to COMMANDS.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from refimpl.memory import retain_freed_memory

from . import __version__

COMMANDS = [
    "gradcheck",
    "describe",
    "train",
    "data",
    "devices",
    "reproduce",
    "plan",
    "cluster",
    "scale",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="catneuron",
        description="Le et al. 2012 ('the cat neuron paper'), readable and runnable on one machine.",
    )
    parser.add_argument("--version", action="version", version=f"catneuron {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"catneuron.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    retain_freed_memory()  # training reuses each step's blocks (see refimpl.memory)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as err:
        # Our own validation errors are meant for the user: print them, not a traceback.
        print(f"catneuron {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
