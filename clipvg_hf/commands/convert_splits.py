"""Convert an official CLIP-VG split pack into a Hugging Face dataset folder (parquet configs + README.md).

Example (the unsupervised single-source pack, all six datasets):

    clipvg-convert-splits --split_root /data/unsup_single_source \
        --image_root /data/image_data --setting unsup-single --output_dir /data/clipvg-hf

Run it once per pack (setting) into the same output folder; the dataset card lists every config present. Each run
writes a staged copy of the folder and swaps it in at the end: a failed or killed run leaves the folder as it was.
A folder holding another kind of dataset (pseudo-labels, or a card not written here) is refused.
Then ``datasets.load_dataset("/data/clipvg-hf", "refcoco-unsup-single")``. Also ``python -m clipvg_hf.convert_splits``
and, from a checkout, ``python data_scripts/convert_splits.py``.

A REC dataset in one of the Hub layouts (:mod:`clipvg_hf.data.hub_layouts`; a Hub id or a local folder) is written
as one config of the same format, for repeated use (images stored once per split, every source id kept)::

    clipvg-convert-splits --from_hub jxu124/refcoco-benchmark --output_dir /data/clipvg-hf \
        [--config refcoco-benchmark] [--splits refcoco_unc_val refcoco_unc_testA] [--image_root COCO/train2014]
"""

from __future__ import annotations

import argparse
import sys

from ..checks import check_output_dir
from ..data import DATASETS, SETTINGS, ConversionError, SplitFileError, convert_pack, format_summary
from ..data.staging import dataset_folder_problem
from ..errors import UsageError
from .arguments import non_negative_float, positive_int
from .errors import report_usage_errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split_root", help="folder holding <dataset>/<dataset>_<split>.pth")
    parser.add_argument(
        "--image_root", help="the official image_data folder (with --from_hub: the images of a path layout)"
    )
    parser.add_argument("--output_dir", required=True, help="dataset folder to write (configs accumulate)")
    parser.add_argument("--setting", choices=sorted(SETTINGS), help="which paper setting the pack is")
    parser.add_argument("--from_hub", metavar="ID", help="convert a Hub REC layout (Hub id or local folder) instead")
    parser.add_argument("--config", help="with --from_hub: the config to write (default: the source's name)")
    parser.add_argument("--splits", nargs="+", help="with --from_hub: these splits (default: all)")
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
    args = parser.parse_args(argv)
    if args.from_hub is None:
        missing = [f"--{name}" for name in ("split_root", "image_root", "setting") if getattr(args, name) is None]
        if missing:
            parser.error(f"the following arguments are required: {', '.join(missing)} (or --from_hub ID)")
        if args.config or args.splits:
            parser.error("--config and --splits go with --from_hub")
    else:
        given = [f"--{name}" for name in ("split_root", "setting", "datasets", "train_file") if getattr(args, name)]
        if given:
            parser.error(f"--from_hub converts a Hub layout: leave out {', '.join(given)}")
    return args


@report_usage_errors
def main(argv: list[str] | None = None) -> int:
    """Convert; bad input is one line ``error: ...`` (file, row and reason) and exit status 2, nothing half written."""
    args = parse_args(argv)
    if args.from_hub is not None:
        return convert_from_hub(args)
    if args.train_file and (not args.datasets or len(args.datasets) != 1):
        raise UsageError("--train_file needs exactly one --datasets entry")
    check_output_dir(args.output_dir)
    problem = dataset_folder_problem(args.output_dir, "converted")  # another kind of dataset: refused up front
    if problem is not None:
        raise UsageError(problem)
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
        raise UsageError(f"{err}{hint}")
    print(format_summary(reports, rejects))
    if rejects:
        print(f"\n{len(rejects)} rejected; see {args.output_dir}/rejects/")
    return 0


def convert_from_hub(args: argparse.Namespace) -> int:
    """``--from_hub``: every (or each given) split of a Hub layout written as one config; counts printed."""
    from ..data.hub_layouts import convert_hub_dataset

    check_output_dir(args.output_dir)
    reports = convert_hub_dataset(
        args.from_hub,
        args.output_dir,
        config=args.config,
        splits=args.splits,
        image_root=args.image_root,
        embed_images=args.image_mode == "embed",
        num_shards=args.num_shards,
    )
    for report in reports:
        print(report.summary())
        if report.note:
            print(f"warning: {report.note}")
    rejected = sum(len(r.rejected) for r in reports)
    if rejected:
        print(f"\n{rejected} rejected; see {args.output_dir}/rejects/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
