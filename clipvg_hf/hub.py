"""Publish CLIP-VG models and datasets on the Hugging Face Hub, with generated model and dataset cards.

- :func:`push_model`: a saved model folder (weights, config with ``auto_map``, remote-code files, processor files)
  plus a model card whose ``model-index`` comes from a :mod:`clipvg_hf.evaluate` results file.
- :func:`push_dataset`: a folder written by ``data_scripts/convert_splits.py`` (parquet per config and split), one
  ``DatasetDict.push_to_hub`` per config, then a dataset card.
- :func:`release_checkpoint`: official checkpoint -> converted folder -> evaluation -> :func:`push_model`.

The command line is ``push_to_hub.py`` at the top of the repository.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import struct
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import (
    CommitOperationAdd,
    DatasetCard,
    DatasetCardData,
    EvalResult,
    HfApi,
    ModelCard,
    ModelCardData,
    get_token,
)
from huggingface_hub import constants as hub_constants

logger = logging.getLogger(__name__)

__all__ = [
    "BASE_MODELS",
    "CITATION",
    "HubPublishError",
    "PushResult",
    "TrainingSetting",
    "build_dataset_card",
    "build_model_card",
    "check_results_for_model",
    "load_results",
    "prepare_model_folder",
    "push_dataset",
    "push_model",
    "release_checkpoint",
    "split_config_name",
    "training_setting",
    "validate_repo_id",
    "weight_files",
    "weights_sha256",
]

CITATION = """@article{xiao2023clip,
  title={CLIP-VG: Self-paced Curriculum Adapting of CLIP for Visual Grounding},
  author={Xiao, Linhui and Yang, Xiaoshan and Peng, Fang and Yan, Ming and Wang, Yaowei and Xu, Changsheng},
  journal={IEEE Transactions on Multimedia},
  year={2023},
  publisher={IEEE}
}"""

#: CLIP checkpoint the official code starts from, by (patch size, vision layers).
BASE_MODELS = {
    (16, 12): "openai/clip-vit-base-patch16",
    (32, 12): "openai/clip-vit-base-patch32",
    (14, 24): "openai/clip-vit-large-patch14",
}
DEFAULT_BASE_MODEL = "openai/clip-vit-base-patch16"

#: Readable names of the dataset part of a config name (``<dataset>-<setting>``).
DATASET_NAMES = {
    "refcoco": "RefCOCO",
    "refcocoplus": "RefCOCO+",
    "refcocog-google": "RefCOCOg (Google split)",
    "refcocog-umd": "RefCOCOg (UMD split)",
    "referit": "ReferItGame",
    "flickr30k": "Flickr30k Entities",
}

TASK_NAME = "Visual grounding (referring expression comprehension)"
CONFIG_FILE = "config.json"
MODEL_CODE_FILES = ("configuration_clipvg.py", "modeling_clipvg.py")
PROCESSOR_CODE_FILES = ("processing_clipvg.py", "image_processing_clipvg.py")
PROCESSOR_FILES = ("processor_config.json", "tokenizer_config.json", "tokenizer.json", "vocab.json", "merges.txt",
                   "special_tokens_map.json", "added_tokens.json")
MODEL_AUTO_MAP = {
    "AutoConfig": "configuration_clipvg.CLIPVGConfig",
    "AutoModel": "modeling_clipvg.CLIPVGForGrounding",
    "AutoModelForZeroShotObjectDetection": "modeling_clipvg.CLIPVGForGrounding",
}
PROCESSOR_AUTO_MAP = {"AutoProcessor": "processing_clipvg.CLIPVGProcessor"}
IMAGE_PROCESSOR_AUTO_MAP = {"AutoImageProcessor": "image_processing_clipvg.CLIPVGImageProcessor", **PROCESSOR_AUTO_MAP}

_REPO_ID = re.compile(r"^(?P<org>[A-Za-z0-9][A-Za-z0-9_.-]{0,95})/(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,95})$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PACKAGE_DIR = Path(__file__).resolve().parent


class HubPublishError(ValueError):
    """Publishing cannot go ahead; the message says why and what to do."""


@dataclass
class PushResult:
    """What a push did (or, for a dry run, would do)."""

    repo_id: str
    repo_type: str
    files: list[str]
    notes: list[str] = field(default_factory=list)
    url: str | None = None
    folder: Path | None = None  # the staged (dry-run) folder


@dataclass(frozen=True)
class TrainingSetting:
    """How the published model was trained, as the card states it."""

    name: str
    supervision: str
    label_sources: str
    curriculum: str


# ---------------------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------------------


def validate_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` if it is ``ORG/NAME`` with Hub-legal characters, else raise :class:`HubPublishError`."""
    match = _REPO_ID.match(repo_id or "")
    if match is None or any(bad in repo_id for bad in ("--", "..")) or repo_id.endswith((".git", ".")):
        raise HubPublishError(
            f"malformed repo id {repo_id!r}: expected ORG/NAME (letters, digits, '-', '_', '.'; no '--' or '..'; "
            "at most 96 characters each), e.g. my-org/clip-vg-refcoco"
        )
    return repo_id


def resolve_token(token: str | None = None) -> str:
    """The token to push with: ``token``, else ``HF_TOKEN`` or the one saved by ``hf auth login``."""
    if hub_constants.HF_HUB_OFFLINE:
        raise HubPublishError("HF_HUB_OFFLINE is set: unset it (or set it to 0) to push to the Hub")
    token = token or get_token()
    if not token:
        raise HubPublishError(
            "no Hugging Face token: set HF_TOKEN, run `hf auth login`, or pass --token (a token with write access)"
        )
    return token


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(model_dir: str | Path) -> str:
    """sha256 of ``model.safetensors``; for sharded weights, of the sorted ``"<shard> <sha256>"`` lines."""
    folder = Path(model_dir)
    single = folder / "model.safetensors"
    if single.is_file():
        return _sha256(single)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        lines = "".join(f"{name} {_sha256(folder / name)}\n" for name in shards)
        return hashlib.sha256(lines.encode()).hexdigest()
    raise HubPublishError(_no_weights_message(folder))


def _no_weights_message(folder: Path) -> str:
    others = sorted(p.name for p in folder.glob("*") if p.suffix in (".bin", ".pth", ".pt", ".ckpt"))
    hint = (f" (found {others}: load the model and re-save it with save_pretrained, or convert an official checkpoint "
            "with python -m clipvg_hf.convert_original_checkpoint)" if others else "")
    return f"{folder} has no model weights: expected model.safetensors or model.safetensors.index.json{hint}"


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and check a results file of :mod:`clipvg_hf.evaluate` (model, dataset, metric, splits)."""
    path = Path(path)
    if not path.is_file():
        raise HubPublishError(f"results file not found: {path}")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise HubPublishError(f"{path} is not JSON: {error}") from error
    problems = []
    model = results.get("model") if isinstance(results, dict) else None
    if not isinstance(model, dict) or not _SHA256.match(str(model.get("weights_sha256", ""))):
        problems.append("model.weights_sha256 (64 hex digits) is missing")
    dataset = results.get("dataset") if isinstance(results, dict) else None
    if not isinstance(dataset, dict) or not dataset.get("name") or not dataset.get("config"):
        problems.append("dataset.name and dataset.config are required")
    if isinstance(results, dict) and results.get("metric") != "Acc@0.5":
        problems.append(f"metric must be 'Acc@0.5', got {results.get('metric')!r}")
    splits = results.get("splits") if isinstance(results, dict) else None
    if not isinstance(splits, dict) or not splits:
        problems.append("splits must map split names to scores")
    else:
        for name, scores in splits.items():
            accuracy = scores.get("accuracy") if isinstance(scores, dict) else None
            if not isinstance(accuracy, (int, float)) or not 0.0 <= accuracy <= 1.0:
                problems.append(f"splits.{name}.accuracy must be a fraction in [0, 1]")
            if not isinstance(scores, dict) or not isinstance(scores.get("num_samples"), int):
                problems.append(f"splits.{name}.num_samples must be an integer")
    if problems:
        raise HubPublishError(f"{path} is not a clipvg_hf.evaluate results file: " + "; ".join(problems))
    return results


def check_results_for_model(results: dict[str, Any], weights_digest: str, results_name: str = "results") -> None:
    """Raise :class:`HubPublishError` if ``results`` were computed for other weights than ``weights_digest``."""
    recorded = results["model"]["weights_sha256"]
    if recorded != weights_digest:
        raise HubPublishError(
            f"{results_name} belongs to another model: it was computed for weights sha256 {recorded[:12]}…, but the "
            f"weights being pushed have sha256 {weights_digest[:12]}…; evaluate this model folder "
            "(python -m clipvg_hf.evaluate --model_name_or_path DIR ...) and pass the new results file"
        )


def _looks_local(name: str) -> bool:
    """True for a dataset name that is a local path rather than a Hub id."""
    return Path(name).expanduser().exists() or name.startswith(("/", ".", "~")) or "\\" in name or \
        _REPO_ID.match(name) is None


# ---------------------------------------------------------------------------------------------------------------
# Training setting and model card
# ---------------------------------------------------------------------------------------------------------------

_LABELS = {
    "full": "human-annotated referring expressions (the TransVG training splits)",
    "single": "pseudo-template labels (the Pseudo-Q generator): one pseudo-language source",
    "multi": "pseudo-template, pseudo-relation and pseudo-caption labels: three pseudo-language sources",
}
_CURRICULA = {
    "none": "none: trained on every label of the split",
    "ssa": "single-source self-paced curriculum adapting (SSA): the training labels are those selected by SSA's "
           "reliability measure, from easy to hard",
    "msa": "multi-source self-paced curriculum adapting (MSA): labels selected per source and across sources by "
           "reliability",
}


def split_config_name(config: str) -> tuple[str, str | None]:
    """``"refcocog-umd-unsup-single"`` -> ``("refcocog-umd", "unsup-single")``; setting None if not recognised."""
    from .data import SETTINGS

    for setting in sorted(SETTINGS, key=len, reverse=True):
        if config.endswith(f"-{setting}"):
            return config[: -len(setting) - 1], setting
    return config, None


def training_setting(setting: str | None, curriculum: str | None = None) -> TrainingSetting:
    """Describe a paper setting (``full``, ``unsup-single``, ``unsup-multi-msa``, ...) for the card.

    ``curriculum`` (``none``, ``ssa``, ``msa``) overrides what the setting name implies; without either, the card
    says the curriculum is not recorded.
    """
    from .data import SETTINGS

    if setting not in SETTINGS:
        raise HubPublishError(f"unknown training setting {setting!r}; expected one of {sorted(SETTINGS)}")
    if setting.startswith("full"):
        supervision, labels = "fully supervised", _LABELS["full"]
    elif setting.startswith("unsup-single"):
        supervision, labels = "unsupervised, single-source pseudo-language labels", _LABELS["single"]
    else:
        supervision, labels = "unsupervised, multi-source pseudo-language labels", _LABELS["multi"]
    implied = "ssa" if setting.endswith("-ssa") else "msa" if setting.endswith("-msa") else None
    chosen = curriculum or implied
    if chosen is not None and chosen not in _CURRICULA:
        raise HubPublishError(f"unknown curriculum {chosen!r}; expected one of {sorted(_CURRICULA)}")
    text = _CURRICULA[chosen] if chosen else "not recorded with this checkpoint"
    return TrainingSetting(setting, supervision, labels, text)


def base_model_of(config: dict[str, Any]) -> str:
    """The OpenAI CLIP checkpoint whose architecture the config follows (ViT-B/16 when unknown)."""
    vision = config.get("vision_config") or {}
    return BASE_MODELS.get((vision.get("patch_size"), vision.get("num_hidden_layers")), DEFAULT_BASE_MODEL)


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


def _eval_results(results: dict[str, Any], dataset_id: str) -> list[EvalResult]:
    """One model-index entry per split and metric; values are the results file's, unchanged."""
    config = results["dataset"]["config"]
    dataset_key, _ = split_config_name(config)
    dataset_name = DATASET_NAMES.get(dataset_key, dataset_key)
    entries = []
    for split, scores in results["splits"].items():
        common = {"task_type": "zero-shot-object-detection", "task_name": TASK_NAME, "dataset_type": dataset_id,
                  "dataset_name": dataset_name, "dataset_config": config, "dataset_split": split}
        entries.append(EvalResult(**common, metric_type="accuracy", metric_name="Acc@0.5",
                                  metric_value=scores["accuracy"], metric_config="iou_threshold=0.5"))
        if isinstance(scores.get("mean_iou"), (int, float)):
            entries.append(EvalResult(**common, metric_type="mean_iou", metric_name="mean IoU",
                                      metric_value=scores["mean_iou"]))
    return entries


def usage_snippets(repo_id: str) -> tuple[str, str]:
    """Python usage: (remote code, no package needed; the ``visual-grounding`` pipeline of ``clipvg_hf``)."""
    remote = f'''import torch
from PIL import Image
from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

repo_id = "{repo_id}"
model = AutoModelForZeroShotObjectDetection.from_pretrained(repo_id, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(repo_id, trust_remote_code=True)

image = Image.open("image.jpg").convert("RGB")
texts = ["the person on the left", "the red umbrella"]  # one box per expression
inputs = processor(images=image, text=texts, return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs)
results = processor.post_process_grounded_object_detection(
    outputs, target_sizes=[(image.height, image.width)] * len(texts), text_labels=texts
)
for result in results:
    print(result["text_labels"][0], result["boxes"][0].tolist())  # (x1, y1, x2, y2) in pixels'''
    package = f'''from transformers import pipeline

import clipvg_hf  # registers CLIP-VG and the "visual-grounding" task

grounder = pipeline("visual-grounding", model="{repo_id}")
for result in grounder("image.jpg", text=["the person on the left", "the red umbrella"]):
    print(result["label"], result["box"])'''
    return remote, package


def build_model_card(
    repo_id: str,
    config: dict[str, Any],
    setting: TrainingSetting | None,
    results: dict[str, Any] | None = None,
    dataset_id: str | None = None,
    num_parameters: int | None = None,
    base_model: str | None = None,
    source: str | None = None,
) -> ModelCard:
    """The model card: metadata (``model-index`` from ``results``), model and training facts, usage, citation."""
    base_model = base_model or base_model_of(config)
    eval_results = _eval_results(results, dataset_id) if results else None
    data = ModelCardData(
        license="mit", library_name="transformers", pipeline_tag="zero-shot-object-detection",
        tags=["visual-grounding", "referring-expression-comprehension", "clip", "clip-vg", "custom_code"],
        datasets=[dataset_id] if dataset_id else None, base_model=base_model, model_name=repo_id.split("/")[1],
        eval_results=eval_results, metrics=["accuracy"] if results else None,
    )
    remote, package = usage_snippets(repo_id)
    body = _MODEL_CARD.format(
        name=repo_id.split("/")[1], base_model=base_model,
        architecture=_architecture(config, num_parameters),
        setting=_setting_text(setting), results=_results_text(results, dataset_id),
        source=f"\nConverted from {source} with `clipvg_hf.convert_original_checkpoint`; the weights are the "
               "official ones, unchanged.\n" if source else "",
        remote=remote, package=package, citation=CITATION,
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _architecture(config: dict[str, Any], num_parameters: int | None) -> str:
    vision, text = config.get("vision_config") or {}, config.get("text_config") or {}
    lines = [
        (f"- CLIP image encoder: ViT, patch {vision.get('patch_size')}, {vision.get('num_hidden_layers')} layers, "
         f"width {vision.get('hidden_size')}, input {config.get('image_size')} px (letterboxed); features of blocks "
         f"{config.get('extract_layers')} are concatenated and projected."),
        (f"- CLIP text encoder: {text.get('num_hidden_layers')} layers, width {text.get('hidden_size')}, at most "
         f"{config.get('max_text_length')} tokens."),
        (f"- Fusion: {config.get('fusion_num_layers')} transformer encoder layers (width "
         f"{config.get('fusion_hidden_size')}, {config.get('fusion_num_heads')} heads) over a learnable [REG] token, "
         "text tokens and image tokens."),
        ("- Box head: a 3-layer MLP on the [REG] token; `pred_boxes` is one normalised (cx, cy, w, h) box per "
         "expression, mapped to pixels by the processor's post-processing."),
    ]
    if num_parameters:
        lines.append(f"- Parameters: {num_parameters:,}.")
    return "\n".join(lines)


def _setting_text(setting: TrainingSetting | None) -> str:
    if setting is None:
        return "Not recorded for this model."
    return (f"- Supervision: {setting.supervision} (setting `{setting.name}`).\n"
            f"- Training labels: {setting.label_sources}.\n"
            f"- Curriculum: {setting.curriculum}.")


def _results_text(results: dict[str, Any] | None, dataset_id: str | None) -> str:
    if not results:
        return "No evaluation results were supplied with this upload."
    lines = [(f"Acc@0.5 (a prediction counts when its IoU with the ground-truth box is at least 0.5) on "
              f"[`{dataset_id}`](https://huggingface.co/datasets/{dataset_id}), config "
              f"`{results['dataset']['config']}`, computed with `clipvg_hf.evaluate`:"), "",
             "| split | Acc@0.5 (%) | mean IoU | expressions |", "|---|---:|---:|---:|"]
    for split, scores in results["splits"].items():
        iou = f"{scores['mean_iou']:.4f}" if isinstance(scores.get("mean_iou"), (int, float)) else "-"
        lines.append(f"| {split} | {100 * scores['accuracy']:.2f} | {iou} | {scores['num_samples']} |")
    return "\n".join(lines)


_MODEL_CARD = """
# {name}

CLIP-VG visual grounding: given an image and a referring expression ("the man in the red shirt"), the model returns
the one box the expression describes. CLIP-VG adapts CLIP ([`{base_model}`](https://huggingface.co/{base_model}))
to visual grounding with self-paced curriculum learning on pseudo-language labels (Xiao et al., IEEE Transactions
on Multimedia 2023). This repository holds the model in the `transformers` format, with its processor and the code
to load it.
{source}
## Model

{architecture}

## Training setting

{setting}

## Evaluation

{results}

## Usage

Without installing anything besides `transformers`, `torch` and `Pillow` (the model code is loaded from this
repository, hence `trust_remote_code=True`):

```python
{remote}
```

With the `clipvg_hf` package installed, the classes are registered and no remote code runs; its `visual-grounding`
pipeline batches the expressions of one image:

```python
{package}
```

The stock `pipeline("zero-shot-object-detection", model=..., trust_remote_code=True)` also works; the candidate
labels are the expressions. CLIP-VG has no confidence head, so every expression gets exactly one box with score 1.0.

## Limitations

- One box per expression, always: the model cannot say that an expression matches nothing, or several objects.
- English expressions of at most 75 BPE tokens; the training data (RefCOCO-family, ReferItGame, Flickr30k) shapes
  what it understands, and its biases.

## License

The code in this repository (`*.py`, from `clipvg_hf`) is MIT-licensed. Weights converted from the original CLIP-VG
release follow that release's terms; the CLIP weights they start from are OpenAI's.

## Citation

```bibtex
{citation}
```
"""


# ---------------------------------------------------------------------------------------------------------------
# Model folder and push
# ---------------------------------------------------------------------------------------------------------------


def _read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise HubPublishError(f"{model_dir} is not a saved model folder: {CONFIG_FILE} is missing")
    config = json.loads(path.read_text())
    if config.get("model_type") != "clip_vg":
        raise HubPublishError(f"{path}: model_type is {config.get('model_type')!r}, not a CLIP-VG model ('clip_vg')")
    return config


def weight_files(model_dir: Path) -> list[str]:
    """The safetensors files of a model folder (index first when sharded); raises if there are none."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        names = ["model.safetensors.index.json", *sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    elif (model_dir / "model.safetensors").is_file():
        names = ["model.safetensors"]
    else:
        raise HubPublishError(_no_weights_message(model_dir))
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
        (model_dir / name).is_file() for name in ("vocab.json", "merges.txt"))
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
        from .image_processing_clipvg import CLIPVGImageProcessor
        from .processing_clipvg import CLIPVGProcessor, build_clip_tokenizer

        size = int(config.get("image_size") or 224)
        processor = CLIPVGProcessor(CLIPVGImageProcessor(size={"longest_edge": size}), build_clip_tokenizer())
        processor.save_pretrained(out)
        notes.append(f"the folder has no processor files: built the default processor (letterbox to {size} px, "
                     "OpenAI CLIP BPE tokenizer built offline with build_clip_tokenizer())")
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
        if _looks_local(dataset_id):
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
    if config.get("auto_map") != {**config.get("auto_map", {}), **MODEL_AUTO_MAP}:
        config["auto_map"] = {**config.get("auto_map", {}), **MODEL_AUTO_MAP}
        _write_json(out / CONFIG_FILE, config)
        notes.append("added auto_map to config.json so that trust_remote_code=True loads the model")
    else:
        shutil.copy2(model_dir / CONFIG_FILE, out / CONFIG_FILE)
    _stage_code(model_dir, out, MODEL_CODE_FILES)
    notes += _stage_processor(model_dir, out, config)
    if setting is None:
        notes.append("training setting unknown (no --setting, no results config): the card says it is not recorded")
    elif curriculum is None and not setting.endswith(("-ssa", "-msa")):
        notes.append("curriculum unknown: the card says it is not recorded (pass --curriculum none|ssa|msa)")
    card = build_model_card(
        repo_id, config, training_setting(setting, curriculum) if setting else None, results, dataset_id,
        count_parameters(out), base_model, source,
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


# ---------------------------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------------------------


def dataset_configs(data_dir: str | Path) -> dict[str, dict[str, int]]:
    """Config -> split -> number of parquet shards, from the folder's README ``configs:`` block."""
    data_dir = Path(data_dir)
    readme = data_dir / "README.md"
    if not readme.is_file():
        raise HubPublishError(f"{data_dir} has no README.md: convert the splits with data_scripts/convert_splits.py")
    configs = DatasetCard.load(readme).data.get("configs") or []
    if not configs:
        raise HubPublishError(f"{readme} declares no configs (expected a `configs:` block)")
    found: dict[str, dict[str, int]] = {}
    for entry in configs:
        splits = {}
        for item in entry.get("data_files") or []:
            shards = sorted(data_dir.glob(item["path"]))
            if not shards:
                raise HubPublishError(f"{data_dir}: config {entry['config_name']!r} split {item['split']!r} "
                                      f"has no files matching {item['path']}")
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


def build_dataset_card(
    repo_id: str,
    metadata: dict[str, Any],
    stats: dict[str, dict[str, dict[str, Any]]],
    documentation: str,
    license_id: str = "other",
) -> DatasetCard:
    """The dataset card: the pushed ``configs``/``dataset_info`` metadata plus licence, tags, provenance, citation.

    ``documentation`` is the converter's card body (schema, box format, splits); ``stats`` is config -> split ->
    :func:`_split_stats`.
    """
    data = DatasetCardData(**metadata)
    data.license = license_id
    data.pretty_name = "CLIP-VG visual grounding splits"
    data.task_categories = ["zero-shot-object-detection"]
    data.tags = sorted({*(data.get("tags") or []), "visual-grounding", "referring-expression-comprehension", "clip-vg"})
    data.language = ["en"]
    lines = ["| config | split | images | expressions | label sources (expressions) |", "|---|---|---:|---:|---|"]
    for config, splits in stats.items():
        for split, s in splits.items():
            sources = ", ".join(f"{name}: {count}" for name, count in s["sources"].items())
            lines.append(f"| {config} | {split} | {s['images']} | {s['expressions']} | {sources} |")
    example_config = next(iter(stats))
    body = documentation.strip() + "\n" + _DATASET_CARD.format(
        repo_id=repo_id, table="\n".join(lines), example_config=example_config,
        first_split=next(iter(stats[example_config])), citation=CITATION)
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")


_DATASET_CARD = """
## Rows and label provenance

Counted in the published parquet files. A label source is `human` for annotated expressions (every evaluation split,
and the training split of the fully supervised settings) and `template`, `relation` or `caption` for the
pseudo-language labels that CLIP-VG's unsupervised settings train on (`pseudo` when a merged multi-source file did not
say which generator produced a row). Pseudo-template labels come from Pseudo-Q's generator; the supervised labels
and evaluation splits are the ones TransVG and CLIP-VG released.

{table}

## Loading

```python
from datasets import load_dataset

ds = load_dataset("{repo_id}", "{example_config}")
stream = load_dataset("{repo_id}", "{example_config}", split="{first_split}", streaming=True)
```

Boxes are `(x1, y1, x2, y2)` in absolute pixels of the stored image (`bbox`); use `bbox_official` to reproduce the
paper's numbers.

## License

`other`: the expressions and boxes come from the CLIP-VG release and the datasets it builds on (RefCOCO, RefCOCO+,
RefCOCOg, ReferItGame, Flickr30k Entities), and the images from MS COCO 2014, SAIAPR TC-12 and Flickr30k. Each keeps
its own terms; check them before use. The conversion code is MIT-licensed.

## Citation

```bibtex
{citation}
```
"""


def _card_documentation(data_dir: Path) -> str:
    """The converter's card body (everything after the YAML header)."""
    return DatasetCard.load(data_dir / "README.md").text


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
    from .data import load_split

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
    for config in order:
        dataset = load_split(data_dir, config)
        stats[config] = {split: _split_stats(dataset[split]) for split in configs[config]}
        if api is not None:
            dataset.push_to_hub(repo_id, config_name=config, set_default=config == default_config or None,
                                private=private, token=token, num_shards=configs[config],
                                commit_message=f"Upload config {config}")
    if api is not None:
        metadata = DatasetCard.load(repo_id, repo_type="dataset", token=token).data.to_dict()
    else:
        metadata = {"configs": [dict(c, default=True) if c["config_name"] == default_config else c
                                for c in DatasetCard.load(data_dir / "README.md").data.get("configs")]}
    card = build_dataset_card(repo_id, metadata, stats, _card_documentation(data_dir))
    if dry_run_dir:
        folder = Path(dry_run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        card.save(folder / "README.md")
        _write_json(folder / "upload_plan.json", {"repo_id": repo_id, "push_order": order, "shards": configs,
                                                   "rows": stats})
        return PushResult(repo_id, "dataset", ["README.md", "upload_plan.json"], notes, folder=folder)
    operations = [CommitOperationAdd("README.md", str(card).encode())]
    if (data_dir / "conversion.json").is_file():  # rows in/out per official file, which the card refers to
        operations.append(CommitOperationAdd("conversion.json", str(data_dir / "conversion.json")))
    if (data_dir / "rejects").is_dir():
        notes.append("rejects/ is not uploaded (its reasons may name local image paths)")
    api.create_commit(repo_id, operations, commit_message="Dataset card", repo_type="dataset")
    files = sorted(api.list_repo_files(repo_id, repo_type="dataset"))
    return PushResult(repo_id, "dataset", files, notes, url=f"{api.endpoint}/datasets/{repo_id}")


# ---------------------------------------------------------------------------------------------------------------
# Release: official checkpoint -> evaluated, published model
# ---------------------------------------------------------------------------------------------------------------


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
    from .convert_original_checkpoint import CheckpointConversionError, convert_checkpoint, load_original_checkpoint

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
    _save_default_processor(model_dir, model.config.image_size)
    del model
    from .evaluate import evaluate_model

    results = evaluate_model(str(model_dir), dataset, config, list(splits), **(evaluate_kwargs or {}))
    _write_json(work_dir / "results.json", results)
    return push_model(model_dir, repo_id, results, private=private, token=token,
                      dry_run_dir=work_dir / "upload" if dry_run else None, dataset_id=dataset_id, setting=setting,
                      curriculum=curriculum, source=f"the official checkpoint `{Path(checkpoint).name}`")


def _check_setting_against_args(setting: str | None, args: Any) -> None:
    """Refuse a card setting that contradicts the checkpoint's own training arguments (``sup_type``)."""
    sup_type = getattr(args, "sup_type", None)
    if setting is None or sup_type is None:
        return
    if (sup_type == "full") != setting.startswith("full"):
        raise HubPublishError(f"the checkpoint was trained with sup_type={sup_type!r} but the setting is {setting!r}; "
                              "pass the right --setting")


def _save_default_processor(model_dir: Path, image_size: int) -> None:
    from .image_processing_clipvg import CLIPVGImageProcessor
    from .processing_clipvg import CLIPVGProcessor, build_clip_tokenizer

    CLIPVGProcessor(CLIPVGImageProcessor(size={"longest_edge": image_size}), build_clip_tokenizer()).save_pretrained(
        model_dir)


def configure_logging() -> None:
    """Plain INFO logging for the command line."""
    logging.basicConfig(level=os.environ.get("CLIPVG_LOG_LEVEL", "INFO"), format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
