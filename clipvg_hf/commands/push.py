"""``clipvg-push``: publish CLIP-VG and HiVG on the Hugging Face Hub: a model folder, a converted dataset, or an official checkpoint release.

    clipvg-push model --model_dir DIR --repo_id ORG/NAME [--results results.json] [--private] [--dry_run OUT]
    clipvg-push dataset --data_dir DIR --repo_id ORG/NAME [--default_config C] [--private] [--dry_run OUT]
    clipvg-push release --checkpoint best_checkpoint.pth --dataset D --dataset_config C \\
        --split val [--split testA] --repo_id ORG/NAME --work_dir WORK [--dataset_id ORG/DATA] [--private] [--dry_run]
        [--family auto|clipvg|hivg] [--merge_lora] [--clip_config CLIP/config.json] [--fusion_num_heads N]
        [--bridge_text_source adaptive|mixup] [--bridge_batch_mixing]
    clipvg-push space --model_id ORG/NAME --repo_id ORG/NAME-demo [--private] [--dry_run OUT]

The token comes from --token, HF_TOKEN or `hf auth login`. ``--dry_run`` writes what would be uploaded and uploads
nothing. Also ``python -m clipvg_hf.hub.cli`` and, from a checkout, ``python push_to_hub.py``. The publishing itself
is the library :mod:`clipvg_hf.hub`.
"""

from __future__ import annotations

import argparse

from ..configuration_hivg import BRIDGE_TEXT_SOURCES
from ..families import FAMILY_CHOICES
from ..hub.release import release_checkpoint
from ..hub.repo import PushResult, configure_logging
from ..hub.space import push_space
from ..hub.staging import push_dataset, push_model
from .arguments import positive_int
from .errors import report_usage_errors


def _card_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset_id",
        help="Hub id of the evaluation dataset, named in the card "
        "(default: the results file's dataset, if it is a Hub id)",
    )
    parser.add_argument(
        "--setting",
        help="training setting stated in the card: full, full-ssa, unsup-single, "
        "unsup-single-ssa, unsup-multi or unsup-multi-msa (default: from the evaluated config's "
        "name, e.g. refcoco-unsup-single)",
    )
    parser.add_argument("--curriculum", choices=("none", "ssa", "msa"), help="curriculum used in training")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    model = sub.add_parser("model", help="upload a saved model folder with a generated model card")
    model.add_argument("--model_dir", required=True)
    model.add_argument("--repo_id", required=True)
    model.add_argument("--results", help="results JSON of clipvg-evaluate for this model")
    _card_options(model)
    model.add_argument("--base_model", help="CLIP checkpoint named as base model (default: from the config)")

    dataset = sub.add_parser("dataset", help="upload a folder written by clipvg-convert-splits")
    dataset.add_argument("--data_dir", required=True)
    dataset.add_argument("--repo_id", required=True)
    dataset.add_argument("--default_config", help="config loaded when none is named (default: the first)")

    release = sub.add_parser("release", help="convert an official CLIP-VG or HiVG checkpoint, evaluate it, upload it")
    release.add_argument("--checkpoint", required=True)
    release.add_argument(
        "--family",
        choices=FAMILY_CHOICES,
        default="auto",
        help="model family of the checkpoint (default: recognised by its state dict's keys)",
    )
    release.add_argument(
        "--merge_lora",
        action="store_true",
        help="HiVG: fold the HiLoRA adapters into the weights (the released model loads without peft)",
    )
    release.add_argument(
        "--clip_config",
        metavar="FILE",
        help="HiVG: config.json of the Hugging Face CLIP the model was built on (its attention head counts)",
    )
    release.add_argument(
        "--bridge_text_source",
        choices=BRIDGE_TEXT_SOURCES,
        help="HiVG: override the bridge text source the training args imply (mixup_pretrain)",
    )
    release.add_argument(
        "--bridge_batch_mixing",
        action="store_true",
        help="HiVG: store the official batched bridge (outputs depend on the batch) as the default",
    )
    release.add_argument(
        "--fusion_num_heads",
        type=positive_int,
        help="fusion attention heads, for a checkpoint that stores no training args (8 for the released models)",
    )
    release.add_argument("--dataset", required=True, help="dataset folder or Hub id to evaluate on")
    release.add_argument(
        "--dataset_config", dest="config", required=True, help="dataset config, e.g. refcoco-unsup-single"
    )
    release.add_argument("--split", action="append", required=True, help="evaluation split (repeatable)")
    release.add_argument("--repo_id", required=True)
    release.add_argument("--work_dir", required=True, help="keeps model/, results.json and, for --dry_run, upload/")
    _card_options(release)

    space = sub.add_parser("space", help="upload a Gradio Space that demos a published model")
    space.add_argument("--model_id", required=True, help="Hub id of the model the Space loads")
    space.add_argument("--repo_id", required=True, help="Hub id of the Space, e.g. ORG/NAME-demo")

    for sub_parser in (model, dataset, space):
        sub_parser.add_argument(
            "--dry_run", metavar="OUT", help="write what would be uploaded into OUT; upload nothing"
        )
    release.add_argument("--dry_run", action="store_true", help="stage WORK/upload; upload nothing")
    for sub_parser in (model, dataset, release, space):
        sub_parser.add_argument("--private", action="store_true", help="create the repo as private")
        sub_parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> PushResult:
    """Dispatch to the push / release functions; returns their :class:`~clipvg_hf.hub.PushResult`."""
    if args.command == "model":
        return push_model(
            args.model_dir,
            args.repo_id,
            args.results,
            private=args.private,
            dry_run_dir=args.dry_run,
            token=args.token,
            dataset_id=args.dataset_id,
            setting=args.setting,
            curriculum=args.curriculum,
            base_model=args.base_model,
        )
    if args.command == "dataset":
        return push_dataset(
            args.data_dir,
            args.repo_id,
            default_config=args.default_config,
            private=args.private,
            dry_run_dir=args.dry_run,
            token=args.token,
        )
    if args.command == "space":
        return push_space(
            args.model_id, args.repo_id, private=args.private, dry_run_dir=args.dry_run, token=args.token
        )
    return release_checkpoint(
        args.checkpoint,
        args.dataset,
        args.config,
        args.split,
        args.repo_id,
        args.work_dir,
        family=args.family,
        merge_lora=args.merge_lora,
        clip_config=args.clip_config,
        fusion_num_heads=args.fusion_num_heads,
        bridge_text_source=args.bridge_text_source,
        bridge_batch_mixing=args.bridge_batch_mixing,
        dataset_id=args.dataset_id,
        private=args.private,
        dry_run=args.dry_run,
        token=args.token,
        setting=args.setting,
        curriculum=args.curriculum,
    )


@report_usage_errors
def main(argv: list[str] | None = None) -> int:
    """Push or stage; a publishing problem (:class:`~clipvg_hf.errors.HubPublishError`, a results file of other
    weights) is one line ``error: ...`` and exit status 2."""
    args = parse_args(argv)
    configure_logging()
    result = run(args)
    for note in result.notes:
        print(f"note: {note}")
    where = f"staged in {result.folder} (dry run, nothing uploaded)" if result.folder else f"uploaded to {result.url}"
    print(f"{result.repo_type} {result.repo_id}: {len(result.files)} files {where}")
    for name in result.files:
        print(f"  {name}")
    return 0
