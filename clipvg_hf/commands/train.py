"""``clipvg-train``: train CLIP-VG or HiVG with Accelerate, on one process or many (:mod:`clipvg_hf.training`).

    accelerate launch -m clipvg_hf.train --dataset DATA --dataset_config refcoco-unsup-single --output_dir runs/refcoco
    accelerate launch train.py --model_name_or_path runs/refcoco/best ...      # from a checkout

Every argument is checked while it is parsed (the dataclasses' ``__post_init__``) or before the first step; a bad one
is one line ``error: ...`` and exit status 2.
"""

from __future__ import annotations

from transformers import HfArgumentParser

from ..training import DataArguments, ModelArguments, TrainArguments, train
from .errors import report_usage_errors

__all__ = ["main", "parse_arguments"]


def parse_arguments(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainArguments]:
    """The three argument dataclasses from the command line (``sys.argv`` when ``argv`` is None)."""
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainArguments))
    return tuple(parser.parse_args_into_dataclasses(argv))


@report_usage_errors
def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and train; the model, checkpoints and ``log.jsonl`` go to ``--output_dir``."""
    train(*parse_arguments(argv))
    return 0
