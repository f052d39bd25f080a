"""The release pipeline: an official checkpoint -> converted folder -> evaluation -> published model with its card.

At the top of the import graph: it uses the converter, the evaluation and the staging, none of which import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..convert_original_checkpoint import CheckpointConversionError, convert_checkpoint, load_original_checkpoint
from ..data.registry import split_config_name
from ..evaluate import evaluate_model
from ..processing_clipvg import CLIPVGProcessor
from ..results import write_results
from .repo import HubPublishError, PushResult, resolve_token, validate_repo_id
from .staging import push_model

__all__ = ["release_checkpoint"]


def release_checkpoint(
    checkpoint: str | Path,
    dataset: str,
    config: str,
    splits: Sequence[str],
    repo_id: str,
    work_dir: str | Path,
    *,
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
    """
    validate_repo_id(repo_id)
    if not dry_run:
        token = resolve_token(token)
    work_dir = Path(work_dir)
    model_dir = work_dir / "model"
    if model_dir.exists() and any(model_dir.iterdir()):
        raise HubPublishError(f"{model_dir} exists and is not empty; choose a new --work_dir")
    try:
        args = load_original_checkpoint(checkpoint).get("args")
        model = convert_checkpoint(checkpoint)
    except (CheckpointConversionError, FileNotFoundError) as error:
        raise HubPublishError(f"cannot convert {checkpoint}: {error}") from error
    setting = setting or split_config_name(config)[1]
    _check_setting_against_args(setting, args)
    model.save_pretrained(model_dir)
    CLIPVGProcessor.from_defaults(model.config.image_size).save_pretrained(model_dir)
    del model
    results = evaluate_model(str(model_dir), dataset, config, list(splits), **(evaluate_kwargs or {}))
    write_results(results, work_dir / "results.json")
    return push_model(
        model_dir,
        repo_id,
        results,
        private=private,
        token=token,
        dry_run_dir=work_dir / "upload" if dry_run else None,
        dataset_id=dataset_id,
        setting=setting,
        curriculum=curriculum,
        source=f"the official checkpoint `{Path(checkpoint).name}`",
    )


def _check_setting_against_args(setting: str | None, args: Any) -> None:
    """Refuse a card setting that contradicts the checkpoint's own training arguments (``sup_type``)."""
    sup_type = getattr(args, "sup_type", None)
    if setting is None or sup_type is None:
        return
    if (sup_type == "full") != setting.startswith("full"):
        raise HubPublishError(
            f"the checkpoint was trained with sup_type={sup_type!r} but the setting is {setting!r}; "
            "pass the right --setting"
        )
