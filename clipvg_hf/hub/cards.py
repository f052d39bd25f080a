"""Model and dataset cards of CLIP-VG and HiVG repos: metadata, the training setting, results, usage, citation.

The card bodies are templates shipped with the package (``clipvg_hf/hub/templates/*.md``, one model card per model
family, chosen by the config's ``model_type``); this module fills them.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

from ..data.registry import SETTINGS, display_name, split_config_name
from ..errors import UsageError
from ..families import family_of_config
from .repo import HubPublishError

__all__ = [
    "BASE_MODELS",
    "CITATION",
    "HIVG_CITATION",
    "TrainingSetting",
    "base_model_of",
    "build_dataset_card",
    "build_model_card",
    "training_setting",
    "usage_snippets",
]

CITATION = """@article{xiao2023clip,
  title={CLIP-VG: Self-paced Curriculum Adapting of CLIP for Visual Grounding},
  author={Xiao, Linhui and Yang, Xiaoshan and Peng, Fang and Yan, Ming and Wang, Yaowei and Xu, Changsheng},
  journal={IEEE Transactions on Multimedia},
  year={2023},
  publisher={IEEE}
}"""

HIVG_CITATION = """@inproceedings{xiao2024hivg,
  title={HiVG: Hierarchical Multimodal Fine-grained Modulation for Visual Grounding},
  author={Xiao, Linhui and Yang, Xiaoshan and Peng, Fang and Wang, Yaowei and Xu, Changsheng},
  booktitle={Proceedings of the 32nd ACM International Conference on Multimedia},
  year={2024},
  url={https://openreview.net/forum?id=NMMyGy1kKZ}
}"""

#: CLIP checkpoint the official code starts from, by (patch size, vision layers).
BASE_MODELS = {
    (16, 12): "openai/clip-vit-base-patch16",
    (32, 12): "openai/clip-vit-base-patch32",
    (14, 24): "openai/clip-vit-large-patch14",
}
DEFAULT_BASE_MODEL = "openai/clip-vit-base-patch16"

TASK_NAME = "Visual grounding (referring expression comprehension)"


def card_template(name: str) -> str:
    """The body template ``templates/<name>.md`` shipped with the package."""
    return "\n" + resources.files(__package__).joinpath("templates", f"{name}.md").read_text(encoding="utf-8")


@dataclass(frozen=True)
class TrainingSetting:
    """How the published model was trained, as the card states it."""

    name: str
    supervision: str
    label_sources: str
    curriculum: str


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


def training_setting(setting: str | None, curriculum: str | None = None) -> TrainingSetting:
    """Describe a paper setting (``full``, ``unsup-single``, ``unsup-multi-msa``, ...) for the card.

    ``curriculum`` (``none``, ``ssa``, ``msa``) overrides what the setting name implies; without either, the card
    says the curriculum is not recorded.
    """
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


def _eval_results(results: dict[str, Any], dataset_id: str) -> list[EvalResult]:
    """One model-index entry per split and metric; values are the results file's, unchanged."""
    config = results["dataset"]["config"]
    dataset_name = display_name(split_config_name(config)[0])
    entries = []
    for split, scores in results["splits"].items():
        common = {
            "task_type": "zero-shot-object-detection",
            "task_name": TASK_NAME,
            "dataset_type": dataset_id,
            "dataset_name": dataset_name,
            "dataset_config": config,
            "dataset_split": split,
        }
        entries.append(
            EvalResult(
                **common,
                metric_type="accuracy",
                metric_name="Acc@0.5",
                metric_value=scores["accuracy"],
                metric_config="iou_threshold=0.5",
            )
        )
        if isinstance(scores.get("mean_iou"), (int, float)):
            entries.append(
                EvalResult(**common, metric_type="mean_iou", metric_name="mean IoU", metric_value=scores["mean_iou"])
            )
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

import clipvg_hf  # registers CLIP-VG, HiVG and the "visual-grounding" task

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
    """The model card of the config's family (CLIP-VG or HiVG): metadata (``model-index`` from ``results``), model
    and training facts, usage, citation."""
    family = _family_of(config)
    converter = family_of_config(config).converter_module
    base_model = base_model or base_model_of(config)
    eval_results = _eval_results(results, dataset_id) if results else None
    data = ModelCardData(
        license="mit",
        library_name="transformers",
        pipeline_tag="zero-shot-object-detection",
        tags=["visual-grounding", "referring-expression-comprehension", "clip", *family.tags, "custom_code"],
        datasets=[dataset_id] if dataset_id else None,
        base_model=base_model,
        model_name=repo_id.split("/")[1],
        eval_results=eval_results,
        metrics=["accuracy"] if results else None,
    )
    remote, package = usage_snippets(repo_id)
    fields = {
        "name": repo_id.split("/")[1],
        "base_model": base_model,
        "architecture": family.architecture(config, num_parameters),
        "setting": _setting_text(setting),
        "results": _results_text(results, dataset_id),
        "source": f"\nConverted from {source} with `{converter}`; {_weights_provenance(config)}.\n" if source else "",
        "remote": remote,
        "package": package,
        "citation": family.citation,
    }
    if family.template == "model_card_hivg":
        fields["batching"] = _hivg_batching(config)
        fields["peft"] = (
            "; this model keeps its HiLoRA adapters separate, so `peft` is needed too"
            if config.get("lora_adapters", True)
            else ""
        )
    body = card_template(family.template).format(**fields)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _weights_provenance(config: dict[str, Any]) -> str:
    """How the published weights relate to the official ones (a HiVG conversion may merge the LoRA adapters)."""
    if "lora_adapters" in config and not config["lora_adapters"]:
        return "the weights are the official ones, with each LoRA adapter merged into its layer (W + alpha / r * B A)"
    return "the weights are the official ones, unchanged"


@dataclass(frozen=True)
class _CardFamily:
    """What a card template says differently: its tags, citation and architecture section."""

    template: str
    tags: tuple[str, ...]
    citation: str
    architecture: Any  # (config, num_parameters) -> the "Model" section


def _family_of(config: dict[str, Any]) -> _CardFamily:
    """The card of a config's model family (:mod:`clipvg_hf.families`; a config without a ``model_type`` is
    CLIP-VG's)."""
    try:
        return _CARDS[family_of_config(config).card_template]
    except UsageError as error:
        raise HubPublishError(f"no model card: {error}") from None


def _encoder_lines(config: dict[str, Any]) -> list[str]:
    """The CLIP image and text encoder lines shared by both families."""
    vision, text = config.get("vision_config") or {}, config.get("text_config") or {}
    return [
        (
            f"- CLIP image encoder: ViT, patch {vision.get('patch_size')}, {vision.get('num_hidden_layers')} layers, "
            f"width {vision.get('hidden_size')}, input {config.get('image_size')} px (letterboxed); features of blocks "
            f"{config.get('extract_layers')} are concatenated and projected."
        ),
        (
            f"- CLIP text encoder: {text.get('num_hidden_layers')} layers, width {text.get('hidden_size')}, at most "
            f"{config.get('max_text_length')} tokens."
        ),
    ]


_BOX_HEAD = (
    "- Box head: a 3-layer MLP on the [REG] token; `pred_boxes` is one normalised (cx, cy, w, h) box per "
    "expression, mapped to pixels by the processor's post-processing."
)


def _with_parameters(lines: list[str], num_parameters: int | None) -> str:
    if num_parameters:
        lines.append(f"- Parameters: {num_parameters:,}.")
    return "\n".join(lines)


def _architecture(config: dict[str, Any], num_parameters: int | None) -> str:
    lines = [
        *_encoder_lines(config),
        (
            f"- Fusion: {config.get('fusion_num_layers')} transformer encoder layers (width "
            f"{config.get('fusion_hidden_size')}, {config.get('fusion_num_heads')} heads) over a learnable [REG] token, "
            "text tokens and image tokens."
        ),
        _BOX_HEAD,
    ]
    return _with_parameters(lines, num_parameters)


def _hivg_architecture(config: dict[str, Any], num_parameters: int | None) -> str:
    if config.get("bridge_text_source") == "mixup":
        bridge_text = (
            "the projected final text features through a conditioning projection (the mixup pre-training model)"
        )
    else:
        bridge_text = (
            f"the text hidden states {config.get('bridge_text_layers')}, each re-weighted per position and gated "
            "into the image width"
        )
    adapters = (
        "kept as separate adapters (peft), as trained"
        if config.get("lora_adapters", True)
        else "merged into the weights (plain `transformers` weights, no peft needed)"
    )
    lines = [
        *_encoder_lines(config),
        (
            f"- Cross-modal bridges in image blocks {config.get('bridge_layers')} (between self-attention and MLP): "
            f"the image tokens cross-attend to {bridge_text}; padding positions are attended too, so the text is "
            f"zero-padded to exactly {config.get('max_text_length')} tokens."
        ),
        (
            f"- HiLoRA: LoRA (rank {config.get('lora_rank')}, alpha {config.get('lora_alpha')}) on the q/k/v/out "
            f"projections of both encoders' self-attention and of the bridges' cross-attention, {adapters}; "
            f"trained up to stage {config.get('hilora_stage')}."
        ),
        (
            f"- Fusion: {config.get('fusion_num_layers')} pre-norm transformer encoder layers (width "
            f"{config.get('fusion_hidden_size')}, {config.get('fusion_num_heads')} heads) with a final layer norm over "
            "a learnable [REG] token, the image CLS and patch tokens and the text tokens."
        ),
        _BOX_HEAD,
        (
            "- Auxiliary heads (training losses): CLIP contrastive logits of the bridged encoders, text-to-patch "
            "alignment and a segmentation mask, supervised by the ground-truth box mask."
        ),
    ]
    return _with_parameters(lines, num_parameters)


def _hivg_batching(config: dict[str, Any]) -> str:
    """What the card says about the official bridge's mixing of the samples of a batch, and this model's setting."""
    mixing = bool(config.get("bridge_batch_mixing"))
    chosen = (
        "This model's config sets `bridge_batch_mixing=True`: it reproduces the official batched computation, so a "
        "box depends on the other samples of its batch and on the batch size."
        if mixing
        else "This model computes each sample on its own (`bridge_batch_mixing=False`, the default): a box never "
        "depends on the other images or expressions of the batch."
    )
    return (
        "The official HiVG code lets each sample's bridges attend to text tokens of the whole batch (a reshape that "
        "mixes the samples), so the released models' outputs change with batch size and order. "
        f"{chosen} Pass `bridge_batch_mixing=True` to the forward (or set it in the config) to reproduce the "
        "official numbers, which were computed on whole evaluation batches."
    )


#: Card template (a model family's ``card_template``) -> what that card says differently.
_CARDS = {
    card.template: card
    for card in (
        _CardFamily("model_card", ("clip-vg",), CITATION, _architecture),
        _CardFamily("model_card_hivg", ("hivg",), HIVG_CITATION, _hivg_architecture),
    )
}


def _setting_text(setting: TrainingSetting | None) -> str:
    if setting is None:
        return "Not recorded for this model."
    return (
        f"- Supervision: {setting.supervision} (setting `{setting.name}`).\n"
        f"- Training labels: {setting.label_sources}.\n"
        f"- Curriculum: {setting.curriculum}."
    )


def _results_text(results: dict[str, Any] | None, dataset_id: str | None) -> str:
    if not results:
        return "No evaluation results were supplied with this upload."
    lines = [
        (
            f"Acc@0.5 (a prediction counts when its IoU with the ground-truth box is at least 0.5) on "
            f"[`{dataset_id}`](https://huggingface.co/datasets/{dataset_id}), config "
            f"`{results['dataset']['config']}`, computed with `clipvg_hf.evaluation`:"
        ),
        "",
        "| split | Acc@0.5 (%) | mean IoU | expressions |",
        "|---|---:|---:|---:|",
    ]
    for split, scores in results["splits"].items():
        iou = f"{scores['mean_iou']:.4f}" if isinstance(scores.get("mean_iou"), (int, float)) else "-"
        lines.append(f"| {split} | {100 * scores['accuracy']:.2f} | {iou} | {scores['num_samples']} |")
    precision = _precision_text(results)
    if precision:
        lines += ["", precision]
    return "\n".join(lines)


def _precision_text(results: dict[str, Any]) -> str:
    """The number format the results were computed in, as the results file records it (nothing if it does not)."""
    dtype = results.get("dtype")
    if not dtype:
        return ""
    hardware = results.get("hardware") or {}
    device = hardware.get("device")
    where = f" on {device}" if device else ""
    if dtype == "float32":
        how = "in float32 (the exact path)"
    elif dtype == "int8":
        how = "in int8 (linear layers dynamically quantised to int8, the rest and the box head in float32: `--dtype`)"
    else:
        how = f"in {dtype} (weights held in {dtype}, box head in float32: `--dtype`)"
    return f"The model ran {how}{where} for these numbers."


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
    data.tags = sorted(
        {*(data.get("tags") or []), "visual-grounding", "referring-expression-comprehension", "clip-vg"}
    )
    data.language = ["en"]
    lines = ["| config | split | images | expressions | label sources (expressions) |", "|---|---|---:|---:|---|"]
    for config, splits in stats.items():
        for split, s in splits.items():
            sources = ", ".join(f"{name}: {count}" for name, count in s["sources"].items())
            lines.append(f"| {config} | {split} | {s['images']} | {s['expressions']} | {sources} |")
    example_config = next(iter(stats))
    body = (
        documentation.strip()
        + "\n"
        + card_template("dataset_card").format(
            repo_id=repo_id,
            table="\n".join(lines),
            example_config=example_config,
            first_split=next(iter(stats[example_config])),
            citation=CITATION,
        )
    )
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")
