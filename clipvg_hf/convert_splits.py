"""Convert an official CLIP-VG split pack into a Hugging Face dataset folder (parquet configs + README.md).

Example (the unsupervised single-source pack, all six datasets):

    clipvg-convert-splits --split_root /data/unsup_single_source \
        --image_root /data/image_data --setting unsup-single --output_dir /data/clipvg-hf

Run it once per pack (setting) into the same output folder; the dataset card lists every config present. Each run
writes a staged copy of the folder and swaps it in at the end: a failed or killed run leaves the folder as it was.
A folder holding another kind of dataset (pseudo-labels, or a card not written here) is refused.
Then ``datasets.load_dataset("/data/clipvg-hf", "refcoco-unsup-single")``. Also ``python -m clipvg_hf.convert_splits``
and, from a checkout, ``python data_scripts/convert_splits.py``.
"""

from __future__ import annotations

import argparse
import sys

from .cli import check_output_dir, exit_usage_error, non_negative_float, positive_int, report_usage_errors
from .data import DATASETS, SETTINGS, ConversionError, SplitFileError, convert_pack, format_summary
from .data.staging import dataset_folder_problem


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split_root", required=True, help="folder holding <dataset>/<dataset>_<split>.pth")
    parser.add_argument("--image_root", required=True, help="the official image_data folder")
    parser.add_argument("--output_dir", required=True, help="dataset folder to write (configs accumulate)")
    parser.add_argument("--setting", required=True, choices=sorted(SETTINGS), help="which paper setting the pack is")
    parser.add_argument(
        "--datasets", nargs="+", choices=sorted(DATASETS), help="default: every dataset folder present"
    )
    parser.add_argument(
        "--image_mode",
        choices=("embed", "path"),
        default="embed",
        help="embed image bytes (self-contained) or store absolute paths to --image_root",
    )
    parser.add_argument(
        "--num_shards", type=positive_int, default=8, help="parquet files per split (fewer if fewer images)"
    )
    parser.add_argument(
        "--rejects",
        action="store_true",
        help="write bad rows to <output_dir>/rejects/<config>.jsonl instead of stopping",
    )
    parser.add_argument(
        "--box_tolerance",
        type=non_negative_float,
        default=1.0,
        help="pixels a box may exceed the image before it counts as outside",
    )
    parser.add_argument("--train_file", help="use this .pth as the training split (e.g. a reliability refine file)")
    return parser.parse_args(argv)


@report_usage_errors
def main(argv: list[str] | None = None) -> int:
    """Convert; bad input is one line ``error: ...`` (file, row and reason) and exit status 2, nothing half written."""
    args = parse_args(argv)
    if args.train_file and (not args.datasets or len(args.datasets) != 1):
        exit_usage_error("--train_file needs exactly one --datasets entry")
    check_output_dir(args.output_dir)
    problem = dataset_folder_problem(args.output_dir, "converted")  # another kind of dataset: refused up front
    if problem is not None:
        exit_usage_error(problem)
    try:
        reports, rejects = convert_pack(
            args.split_root,
            args.image_root,
            args.output_dir,
            args.setting,
            args.datasets,
            collect_rejects=args.rejects,
            embed_images=args.image_mode == "embed",
            num_shards=args.num_shards,
            box_tolerance=args.box_tolerance,
            train_file=args.train_file,
        )
    except (ConversionError, SplitFileError) as err:
        hint = "" if args.rejects else "; rerun with --rejects to list bad rows in a report instead of stopping"
        exit_usage_error(f"{err}{hint}")
    print(format_summary(reports, rejects))
    if rejects:
        print(f"\n{len(rejects)} rejected; see {args.output_dir}/rejects/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
