"""``clipvg-demo``: the offline demo (:mod:`clipvg_hf.demo_run`): a small CLIP-VG learns to ground expressions on
generated shapes, in minutes on a CPU. Exit status 0 when it beats the best language-blind baseline by the target
margin, 1 when it does not, 2 for bad arguments.

    clipvg-demo --output_dir outputs/demo          # what `make demo` runs (python -m clipvg_hf.demo)
"""

from __future__ import annotations

import argparse

from ..checks import check_output_dir
from ..demo_run import run_demo
from .arguments import non_negative_int, positive_float, positive_int
from .errors import report_usage_errors

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The arguments of ``clipvg-demo``."""
    parser = argparse.ArgumentParser(description="Offline CLIP-VG demo on generated shapes.")
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--train_images", type=positive_int, default=2000)
    parser.add_argument("--val_images", type=positive_int, default=200)
    parser.add_argument("--test_images", type=positive_int, default=100)
    parser.add_argument("--epochs", type=positive_int, default=20)
    parser.add_argument("--batch_size", type=positive_int, default=64)
    parser.add_argument("--learning_rate", type=positive_float, default=5e-4)
    parser.add_argument("--warmup_steps", type=non_negative_int, default=50)
    parser.add_argument(
        "--lr_scheduler",
        choices=["cosine", "constant"],
        default="constant",
        help="constant (after warm-up) by default: when the loss leaves its plateau varies with the seed and the CPU's "
        "rounding, and a late take-off still has the full learning rate left; cosine leaves it too little.",
    )
    parser.add_argument(
        "--mixed_precision",
        choices=["no", "bf16"],
        default="no",
        help="bf16: train under bf16 autocast (accelerate's --mixed_precision bf16 on the CPU); weights and the "
        "optimiser stay fp32. Fastest on CPUs with bf16 units (AMX, AVX512-BF16).",
    )
    parser.add_argument("--seed", type=non_negative_int, default=13)
    parser.add_argument(
        "--init_noise",
        type=float,
        default=0.0,
        help="Add Gaussian noise of this standard deviation to every initial weight (a stand-in for another CPU's "
        "rounding, to check that the outcome does not hang on the last bits).",
    )
    return parser


@report_usage_errors
def main(argv: list[str] | None = None) -> int:
    """Run the demo; its summary is in ``<output_dir>/summary.json``."""
    args = build_parser().parse_args(argv)
    check_output_dir(args.output_dir)
    return 0 if run_demo(args)["reached"] else 1
