"""The cross-source reliability grid (paper Fig. 5): H_ij = source j scored by measurer i, as one figure.

    python -m clipvg_hf.curriculum.grid --scores template=runs/scores_Mtemplate relation=runs/scores_Mrelation \
        --output grid.png [--json grid.json]

Each ``NAME=FOLDER`` is a score run (``python -m clipvg_hf.curriculum.score``) of measurer NAME over a split holding
all sources; measurer names that equal a source name mark its SR cell. MSA draws the same grid itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..checks import check_output_file
from ..commands.errors import report_usage_errors
from ..errors import UsageError, first_line
from .plots import plot_histogram_grid
from .reliability import load_scores

__all__ = ["main"]


@report_usage_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="n x n SR/CR reliability histogram grid.")
    parser.add_argument("--scores", nargs="+", required=True, help="NAME=FOLDER of each measurer's score run")
    parser.add_argument("--sources", nargs="+", help="source columns (default: all, sorted)")
    parser.add_argument("--output", required=True, help="PNG to write")
    parser.add_argument("--json", help="also write the per-cell summaries here")
    args = parser.parse_args(argv)
    check_output_file(args.output, "--output")
    if args.json:
        check_output_file(args.json, "--json")
    specs = []
    for spec in args.scores:
        if "=" not in spec:
            parser.error(f"--scores entries are NAME=FOLDER, got {spec!r}")
        name, folder = spec.split("=", 1)
        if not (Path(folder).is_file() or (Path(folder) / "scores.parquet").is_file()):
            parser.error(f"--scores {spec}: {folder} holds no scores.parquet (run clipvg_hf.curriculum.score)")
        specs.append((name, folder))
    cells, names, all_sources = {}, [], set()
    for name, folder in specs:
        try:
            scores = load_scores(folder)
        except (OSError, ValueError) as error:  # not a scores file, non-finite reliabilities
            raise UsageError(f"--scores {name}={folder}: {first_line(error)}") from error
        names.append(name)
        for source in set(scores.source):
            cells[(name, source)] = scores.reliability[scores.source == source].astype(np.float64)
            all_sources.add(source)
    sources = args.sources or sorted(all_sources)
    png = plot_histogram_grid(cells, names, sources, args.output)
    summary = {
        f"{m}/{s}": {"num_samples": int(v.size), "mean": float(v.mean()) if v.size else None}
        for (m, s), v in cells.items()
    }
    if args.json:
        Path(args.json).write_text(json.dumps({"png": png, "cells": summary}, indent=1) + "\n")
    print(json.dumps({"png": png, "cells": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
