"""The release pipeline: an official CLIP-VG or HiVG checkpoint -> converted folder -> evaluation -> published model
with its card.

The family is told from the checkpoint's state dict by the model-family registry (:mod:`clipvg_hf.families`), as
``clipvg-convert-checkpoint`` does, or forced with ``family``. At the top of the import graph: it uses the
converters, the evaluation and the staging, none of which import it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..checks import load_split_checked
from ..conversion.common import CheckpointConversionError, load_original_checkpoint, save_converted
from ..conversion.hivg import read_clip_config as read_hivg_clip_config
from ..data import load_split
from ..data.registry import split_config_name
from ..errors import UsageError
from ..evaluation import evaluate_model, write_results
from ..families import FAMILY_CHOICES, convert_official_checkpoint, family_of_checkpoint, refuse_foreign_options
from .repo import HubPublishError, PushResult, resolve_token, validate_repo_id
from .staging import push_model

__all__ = ["checkpoint_family", "read_clip_config", "release_checkpoint"]


def release_checkpoint(
    checkpoint: str | Path,
    dataset: str,
    config: str,
    splits: Sequence[str],
    repo_id: str,
    work_dir: str | Path,
    *,
    family: str = "auto",
    merge_lora: bool = False,
    clip_config: str | Path | None = None,
    fusion_num_heads: int | None = None,
    bridge_text_source: str | None = None,
    bridge_batch_mixing: bool = False,
    dataset_id: str | None = None,
    private: bool = False,
    dry_run: bool = False,
    token: str | None = None,
    setting: str | None = None,
    curriculum: str | None = None,
    evaluate_kwargs: dict[str, Any] | None = None,
) -> PushResult:
    """Convert an official checkpoint into ``work_dir/model``, evaluate it, and push it with a card of those numbers.

    ``work_dir`` keeps the converted folder, ``results.json`` and (for a dry run) the staged upload in ``upload/``.
    ``family`` is ``auto`` (from the state dict), ``clipvg`` or ``hivg``. HiVG only: ``merge_lora`` folds the HiLoRA
    adapters into the weights (a model that loads without peft), ``clip_config`` is the ``config.json`` of the
    Hugging Face CLIP the model was built on (its head counts), ``bridge_text_source`` overrides the bridge text
    source the training args imply (the official code switches it on the evaluation command line) and
    ``bridge_batch_mixing`` stores the official batched bridge as the default. ``fusion_num_heads`` is for
    checkpoints that store no training args. Every argument is checked before anything is written.
    """
    validate_repo_id(repo_id)
    if not dry_run:
        token = resolve_token(token)
    if family not in FAMILY_CHOICES:
        raise HubPublishError(f"--family {family!r}: choose one of {', '.join(FAMILY_CHOICES)}")
    if clip_config is not None:
        read_clip_config(clip_config)  # a bad --clip_config fails before anything is written
    work_dir = Path(work_dir)
    model_dir = work_dir / "model"
    new_work_dir = not work_dir.exists()
    if model_dir.exists() and any(model_dir.iterdir()):
        raise HubPublishError(f"{model_dir} exists and is not empty; choose a new --work_dir")
    for split in splits:  # an unknown dataset, config or split fails before anything is converted or written
        try:
            load_split_checked(dataset, config, split, load_split)
        except UsageError as error:
            raise HubPublishError(str(error)) from error
    try:
        loaded = load_original_checkpoint(checkpoint)
    except (CheckpointConversionError, FileNotFoundError) as error:
        raise HubPublishError(f"cannot convert {checkpoint}: {error}") from error
    chosen = family_of_checkpoint(loaded, family)
    options = dict(
        merge_lora=merge_lora,
        clip_config=clip_config,
        bridge_text_source=bridge_text_source,
        bridge_batch_mixing=bridge_batch_mixing,
    )
    try:
        refuse_foreign_options(chosen, family, checkpoint, options, verb="released")
    except CheckpointConversionError as error:
        raise HubPublishError(str(error)) from None
    setting = setting or split_config_name(config)[1]
    _check_setting_against_args(setting, loaded.get("args"))
    try:
        _, model = convert_official_checkpoint(
            checkpoint, loaded, chosen.name, fusion_num_heads=fusion_num_heads, **options
        )
    except CheckpointConversionError as error:
        raise HubPublishError(f"cannot convert {checkpoint} as a {chosen.display_name} checkpoint: {error}") from error
    del loaded
    try:
        save_converted(model, model_dir)
        del model
        results = evaluate_model(str(model_dir), dataset, config, list(splits), **(evaluate_kwargs or {}))
    except UsageError as error:  # e.g. a model whose boxes are not finite: nothing is staged, WORK/model removed
        shutil.rmtree(model_dir, ignore_errors=True)
        if new_work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
        raise HubPublishError(f"cannot release {checkpoint}: {error}") from error
    write_results(results, work_dir / "results.json")
    return push_model(
        model_dir,
        repo_id,
        results,
        private=private,
        token=token,
        dry_run_dir=work_dir / "upload" if dry_run else None,
        commit_message=f"Upload {chosen.display_name} model",
        dataset_id=dataset_id,
        setting=setting,
        curriculum=curriculum,
        source=f"the official checkpoint `{Path(checkpoint).name}`",
    )


def checkpoint_family(checkpoint: dict[str, Any], family: str = "auto") -> str:
    """``clipvg`` or ``hivg``: ``family`` unless it is ``auto``, else what the loaded checkpoint's state dict is."""
    return family_of_checkpoint(checkpoint, family).name


def read_clip_config(path: str | Path) -> dict[str, Any]:
    """Read a Hugging Face CLIP ``config.json`` (``--clip_config``) as the HiVG converter does.

    Raises :class:`HubPublishError` naming the flag and the file when it cannot be read, is not JSON, is not a CLIP
    config (``text_config`` and ``vision_config`` objects) or holds a head count that is not a positive integer.
    """
    try:
        return read_hivg_clip_config(path)
    except CheckpointConversionError as error:
        raise HubPublishError(str(error)) from None


def _check_setting_against_args(setting: str | None, args: Any) -> None:
    """Refuse a card setting that contradicts the checkpoint's own training arguments (``sup_type``).

    HiVG's training parser has the same ``--sup_type`` (default ``full``; any other value trains on
    ``train_pseudo``, as in CLIP-VG), so the one check covers both families.
    """
    sup_type = getattr(args, "sup_type", None)
    if setting is None or sup_type is None:
        return
    if (sup_type == "full") != setting.startswith("full"):
        raise HubPublishError(
            f"the checkpoint was trained with sup_type={sup_type!r} but the setting is {setting!r}; "
            "pass the right --setting"
        )
