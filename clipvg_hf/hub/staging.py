"""Stage and upload CLIP-VG repos: a model folder (weights, config with ``auto_map``, remote code, processor, card)
and a converted dataset folder (one ``DatasetDict.push_to_hub`` per config, then the dataset card).

What a dry run writes is exactly what a push uploads. The model's ``auto_map`` entries and remote-code files come
from its family's row of :mod:`clipvg_hf.families`, the processor's from :data:`PROCESSOR_CLASSES`.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets.table import embed_table_storage
from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi

from ..data import load_split
from ..data.registry import split_config_name
from ..evaluation.results import check_results_for_model, load_results, no_weights_message, weights_sha256
from ..families import auto_map, code_files, family_of_config, family_of_model_type, known_model_types
from ..image_processing_clipvg import CLIPVGImageProcessor
from ..processing_clipvg import CLIPVGProcessor
from .cards import build_dataset_card, build_model_card, training_setting
from .repo import HubPublishError, PushResult, looks_local, resolve_token, validate_repo_id

__all__ = [
    "PROCESSOR_CLASSES",
    "count_parameters",
    "dataset_configs",
    "prepare_model_folder",
    "push_dataset",
    "push_model",
    "weight_files",
]

CONFIG_FILE = "config.json"
PROCESSOR_FILES = (
    "processor_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
)
#: Auto class -> processor class, as registered in ``clipvg_hf.families``; every model family shares them.
PROCESSOR_CLASSES: dict[str, type] = {"AutoProcessor": CLIPVGProcessor}
IMAGE_PROCESSOR_CLASSES: dict[str, type] = {"AutoImageProcessor": CLIPVGImageProcessor, **PROCESSOR_CLASSES}
PROCESSOR_AUTO_MAP = auto_map(PROCESSOR_CLASSES)
IMAGE_PROCESSOR_AUTO_MAP = auto_map(IMAGE_PROCESSOR_CLASSES)
PROCESSOR_CODE_FILES = code_files({"AutoProcessor": CLIPVGProcessor, "AutoImageProcessor": CLIPVGImageProcessor})
_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def count_parameters(model_dir: Path) -> int:
    """Number of weights stored in the safetensors file(s), read from their headers only."""
    files = [name for name in weight_files(model_dir) if name.endswith(".safetensors")]
    total = 0
    for name in files:
        with (model_dir / name).open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for key, entry in header.items():
            if key != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= dim
                total += count
    return total


def _read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise HubPublishError(f"{model_dir} is not a saved model folder: {CONFIG_FILE} is missing")
    config = json.loads(path.read_text())
    if family_of_model_type(config.get("model_type")) is None:
        raise HubPublishError(f"{path}: model_type is {config.get('model_type')!r}, not {known_model_types()}")
    return config


#: The names ``save_pretrained`` gives weight shards; an index may list nothing else (never ``.env`` or ``../x``).
SHARD_NAME = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def weight_files(model_dir: Path) -> list[str]:
    """The safetensors files of a model folder (index first when sharded); raises if there are none.

    The shards an index lists must be named as ``save_pretrained`` names them, directly inside the folder: an
    index is data, and a crafted one could otherwise stage any file (``.env``, ``../secrets``) as a weight shard.
    """
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            listed = sorted({str(name) for name in weight_map.values()})
        except (ValueError, KeyError, TypeError, AttributeError):
            raise HubPublishError(f"{index}: not a safetensors index (no weight_map of tensor -> shard)") from None
        odd = [name for name in listed if not SHARD_NAME.fullmatch(name)]
        if odd:
            raise HubPublishError(
                f"{index} lists files that are not weight shards of this folder: {odd[:5]} (a shard is named "
                "model-NNNNN-of-NNNNN.safetensors, as save_pretrained writes it)"
            )
        names = ["model.safetensors.index.json", *listed]
    elif (model_dir / "model.safetensors").is_file():
        names = ["model.safetensors"]
    else:
        raise HubPublishError(no_weights_message(model_dir))
    missing = [name for name in names if not (model_dir / name).is_file()]
    if missing:
        raise HubPublishError(f"{model_dir}: weight shards listed in the index are missing: {missing}")
    return names


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _stage_code(model_dir: Path, out: Path, names: Sequence[str]) -> None:
    """Copy remote-code files: the folder's own copies, else the installed package's."""
    for name in names:
        source = model_dir / name if (model_dir / name).is_file() else _PACKAGE_DIR / name
        shutil.copy2(source, out / name)


def _stage_processor(model_dir: Path, out: Path, config: dict[str, Any]) -> list[str]:
    """Copy the processor files (or build the default processor) and add their ``auto_map``; returns notes."""
    notes = []
    present = [name for name in PROCESSOR_FILES if (model_dir / name).is_file()]
    has_tokenizer = (model_dir / "tokenizer.json").is_file() or all(
        (model_dir / name).is_file() for name in ("vocab.json", "merges.txt")
    )
    complete = "processor_config.json" in present and "tokenizer_config.json" in present and has_tokenizer
    if complete:
        for name in present:
            shutil.copy2(model_dir / name, out / name)
    elif present:
        raise HubPublishError(
            f"{model_dir} has an incomplete processor ({present}): it needs processor_config.json, "
            "tokenizer_config.json and tokenizer.json (or vocab.json + merges.txt); save the full processor with "
            "CLIPVGProcessor.save_pretrained, or remove these files to publish the default processor"
        )
    else:
        size = int(config.get("image_size") or 224)
        processor = CLIPVGProcessor.from_defaults(size)
        processor.save_pretrained(out)
        notes.append(
            f"the folder has no processor files: built the default processor (letterbox to {size} px, "
            "OpenAI CLIP BPE tokenizer built offline: CLIPVGProcessor.from_defaults)"
        )
    processor_config = json.loads((out / "processor_config.json").read_text())
    processor_config["auto_map"] = dict(PROCESSOR_AUTO_MAP)
    if isinstance(processor_config.get("image_processor"), dict):
        processor_config["image_processor"]["auto_map"] = dict(IMAGE_PROCESSOR_AUTO_MAP)
    _write_json(out / "processor_config.json", processor_config)
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    for key in ("is_local", "local_files_only", "name_or_path"):  # loading artefacts, not settings
        tokenizer_config.pop(key, None)
    tokenizer_config["auto_map"] = dict(PROCESSOR_AUTO_MAP)
    _write_json(out / "tokenizer_config.json", tokenizer_config)
    _stage_code(model_dir, out, PROCESSOR_CODE_FILES)
    return notes


def prepare_model_folder(
    model_dir: str | Path,
    out: str | Path,
    repo_id: str,
    results: dict[str, Any] | None = None,
    dataset_id: str | None = None,
    setting: str | None = None,
    curriculum: str | None = None,
    base_model: str | None = None,
    source: str | None = None,
) -> list[str]:
    """Write into ``out`` exactly what :func:`push_model` uploads; returns notes for the user.

    ``results`` must have been computed for these weights. The dataset named in the card is ``dataset_id``, else the
    results' dataset if it is a Hub id (a local folder is never written into the card).
    """
    model_dir, out = Path(model_dir), Path(out)
    validate_repo_id(repo_id)
    config = _read_config(model_dir)
    weights = weight_files(model_dir)
    if results is not None:
        check_results_for_model(results, weights_sha256(model_dir))
        dataset_id = dataset_id or results["dataset"]["name"]
        if looks_local(dataset_id):
            raise HubPublishError(
                f"the results were computed on a local dataset folder ({dataset_id!r}); pass --dataset_id ORG/NAME "
                "(the Hub id of that dataset) so that the card names it without a local path"
            )
        validate_repo_id(dataset_id)
        setting = setting or split_config_name(results["dataset"]["config"])[1]
    if out.exists() and any(out.iterdir()):
        raise HubPublishError(f"{out} exists and is not empty; choose a new folder for the staged upload")
    out.mkdir(parents=True, exist_ok=True)
    notes = []
    for name in weights:
        shutil.copy2(model_dir / name, out / name)
    family = family_of_config(config)
    model_auto_map, model_code_files = family.auto_map, family.code_files
    if config.get("auto_map") != {**config.get("auto_map", {}), **model_auto_map}:
        config["auto_map"] = {**config.get("auto_map", {}), **model_auto_map}
        _write_json(out / CONFIG_FILE, config)
        notes.append("added auto_map to config.json so that trust_remote_code=True loads the model")
    else:
        shutil.copy2(model_dir / CONFIG_FILE, out / CONFIG_FILE)
    _stage_code(model_dir, out, model_code_files)
    notes += _stage_processor(model_dir, out, config)
    if setting is None:
        notes.append("training setting unknown (no --setting, no results config): the card says it is not recorded")
    elif curriculum is None and not setting.endswith(("-ssa", "-msa")):
        notes.append("curriculum unknown: the card says it is not recorded (pass --curriculum none|ssa|msa)")
    card = build_model_card(
        repo_id,
        config,
        training_setting(setting, curriculum) if setting else None,
        results,
        dataset_id,
        count_parameters(out),
        base_model,
        source,
    )
    card.save(out / "README.md")
    skipped = sorted(p.name for p in model_dir.iterdir() if not (out / p.name).exists())
    if skipped:
        notes.append(f"not uploaded (not part of a model repo): {skipped}")
    return notes


def push_model(
    model_dir: str | Path,
    repo_id: str,
    results: str | Path | dict[str, Any] | None = None,
    *,
    private: bool = False,
    dry_run_dir: str | Path | None = None,
    token: str | None = None,
    commit_message: str = "Upload CLIP-VG model",
    **card_kwargs: Any,
) -> PushResult:
    """Stage ``model_dir`` (see :func:`prepare_model_folder`) and upload it to the model repo ``repo_id``.

    With ``dry_run_dir`` the staged folder is written there and nothing is uploaded (no token needed).
    """
    validate_repo_id(repo_id)
    if not dry_run_dir:
        token = resolve_token(token)
    if results is not None and not isinstance(results, dict):
        results = load_results(results)
    with tempfile.TemporaryDirectory(prefix="clipvg-push-") as scratch:
        folder = Path(dry_run_dir) if dry_run_dir else Path(scratch) / "upload"
        notes = prepare_model_folder(model_dir, folder, repo_id, results, **card_kwargs)
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        if dry_run_dir:
            return PushResult(repo_id, "model", files, notes, folder=folder)
        api = HfApi(token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
    return PushResult(repo_id, "model", files, notes, url=str(url))


def dataset_configs(data_dir: str | Path) -> dict[str, dict[str, int]]:
    """Config -> split -> number of parquet shards, from the folder's README ``configs:`` block."""
    data_dir = Path(data_dir)
    readme = data_dir / "README.md"
    if not readme.is_file():
        raise HubPublishError(f"{data_dir} has no README.md: convert the splits with clipvg-convert-splits")
    configs = DatasetCard.load(readme).data.get("configs") or []
    if not configs:
        raise HubPublishError(f"{readme} declares no configs (expected a `configs:` block)")
    found: dict[str, dict[str, int]] = {}
    for entry in configs:
        splits = {}
        for item in entry.get("data_files") or []:
            shards = sorted(data_dir.glob(item["path"]))
            if not shards:
                raise HubPublishError(
                    f"{data_dir}: config {entry['config_name']!r} split {item['split']!r} "
                    f"has no files matching {item['path']}"
                )
            splits[item["split"]] = len(shards)
        found[entry["config_name"]] = splits
    return found


def _split_stats(dataset) -> dict[str, Any]:
    """Images, expressions and expressions per label source of one split (reads the expressions column only)."""
    import pyarrow.compute as pc

    column = dataset.data.column("expressions")
    flat = pc.list_flatten(column)
    sources = Counter(pc.struct_field(flat, "source").to_pylist())
    return {"images": dataset.num_rows, "expressions": len(flat), "sources": dict(sorted(sources.items()))}


def _card_documentation(data_dir: Path) -> str:
    """The converter's card body (everything after the YAML header)."""
    return DatasetCard.load(data_dir / "README.md").text


def _stage_parquet(dataset: Any, config: str, shards: dict[str, int], folder: Path) -> list[str]:
    """Write the parquet files ``DatasetDict.push_to_hub`` would upload for one config (same shards, same names,
    images embedded), so a dry run shows every byte that would leave the machine."""
    names = []
    for split, count in shards.items():
        for index in range(count):
            shard = dataset[split].shard(num_shards=count, index=index, contiguous=True).with_format("arrow")
            shard = shard.map(embed_table_storage, batched=True, keep_in_memory=True)
            name = f"{config}/{split}-{index:05d}-of-{count:05d}.parquet"
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shard.to_parquet(folder / name)
            names.append(name)
    return names


def push_dataset(
    data_dir: str | Path,
    repo_id: str,
    *,
    default_config: str | None = None,
    private: bool = False,
    dry_run_dir: str | Path | None = None,
    token: str | None = None,
) -> PushResult:
    """Push every config of a converted dataset folder (default first, see below), then the dataset card.

    Each config goes up with ``DatasetDict.push_to_hub(config_name=...)`` (parquet, features in the metadata, one
    file per local shard). datasets 5.2 raises ``KeyError: 'default'`` when ``set_default=True`` is pushed after
    another config, so the default config (``default_config``, else the first one) is pushed first.
    """
    data_dir = Path(data_dir)
    validate_repo_id(repo_id)
    if not dry_run_dir:
        token = resolve_token(token)
    configs = dataset_configs(data_dir)
    default_config = default_config or next(iter(configs))
    if default_config not in configs:
        raise HubPublishError(f"default config {default_config!r} is not in {data_dir}: {sorted(configs)}")
    order = [default_config, *(c for c in configs if c != default_config)]
    stats: dict[str, dict[str, dict[str, Any]]] = {}
    notes = [f"default config: {default_config}"]
    api = None if dry_run_dir else HfApi(token=token)
    if api is not None:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    staged: list[str] = []
    for config in order:
        dataset = load_split(data_dir, config)
        stats[config] = {split: _split_stats(dataset[split]) for split in configs[config]}
        if dry_run_dir:
            staged += _stage_parquet(dataset, config, configs[config], Path(dry_run_dir))
        if api is not None:
            dataset.push_to_hub(
                repo_id,
                config_name=config,
                set_default=config == default_config or None,
                private=private,
                token=token,
                num_shards=configs[config],
                commit_message=f"Upload config {config}",
            )
    if api is not None:
        metadata = DatasetCard.load(repo_id, repo_type="dataset", token=token).data.to_dict()
    else:
        metadata = {
            "configs": [
                dict(c, default=True) if c["config_name"] == default_config else c
                for c in DatasetCard.load(data_dir / "README.md").data.get("configs")
            ]
        }
    card = build_dataset_card(repo_id, metadata, stats, _card_documentation(data_dir))
    if dry_run_dir:
        folder = Path(dry_run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        card.save(folder / "README.md")
        _write_json(
            folder / "upload_plan.json", {"repo_id": repo_id, "push_order": order, "shards": configs, "rows": stats}
        )
        return PushResult(repo_id, "dataset", ["README.md", "upload_plan.json", *staged], notes, folder=folder)
    operations = [CommitOperationAdd("README.md", str(card).encode())]
    if (data_dir / "conversion.json").is_file():  # rows in/out per official file, which the card refers to
        operations.append(CommitOperationAdd("conversion.json", str(data_dir / "conversion.json")))
    if (data_dir / "rejects").is_dir():
        notes.append("rejects/ is not uploaded (its reasons may name local image paths)")
    api.create_commit(repo_id, operations, commit_message="Dataset card", repo_type="dataset")
    files = sorted(api.list_repo_files(repo_id, repo_type="dataset"))
    return PushResult(repo_id, "dataset", files, notes, url=f"{api.endpoint}/datasets/{repo_id}")
