"""The ``automoe`` command line: a thin dispatcher.

Each module in `automoe.commands` adds its subcommands through ``register(subparsers)``
and does its work by calling library functions; this file only parses and reports errors.
Bad usage or bad input (a ValueError, a missing file) prints one line to stderr and exits
with status 2; nothing is written half-way (commands write through temporary files).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from automoe import commands

__all__ = ["main", "build_parser"]

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="automoe",
        description=(
            "Neural architecture search for dense and Mixture-of-Experts Transformers: "
            "train a weight-sharing SuperNet once, search it on Ray for Pareto-optimal "
            "subnets (BLEU vs FLOPs vs measured latency), export, retrain and plot."
        ),
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"automoe.commands.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:  # bad input, or a path we cannot read or write
        print(f"automoe {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("automoe: interrupted", file=sys.stderr)
        return 130


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
