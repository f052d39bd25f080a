"""``clipvg-curriculum {score,ssa,msa,grid} ...`` (also ``python -m clipvg_hf.curriculum ...``): one command for the
curriculum steps; each subcommand is the ``main`` of its module and takes the same arguments."""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["COMMANDS", "main"]

COMMANDS = {
    "score": "reliability of every training row under a measurer model (scores.parquet)",
    "ssa": "single-source self-paced adapting: search the reliability threshold",
    "msa": "multi-source self-paced adapting: per-source thresholds, sources in order",
    "grid": "n x n SR/CR reliability histogram grid of several score runs",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="clipvg-curriculum",
        description="CLIP-VG self-paced curriculum steps.",
        epilog="; ".join(f"{name}: {text}" for name, text in COMMANDS.items()),
    )
    parser.add_argument("command", choices=sorted(COMMANDS), help="which step (see its --help)")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="the step's own arguments")
    args = parser.parse_args(argv)
    module = importlib.import_module(f"{__package__}.{args.command}")
    sys.argv[0] = f"clipvg-curriculum {args.command}"  # the step's usage line names the command typed
    return module.main(args.arguments)


if __name__ == "__main__":
    sys.exit(main())
