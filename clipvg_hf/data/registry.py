"""What the project knows about datasets and settings, in one place: used by conversion, training, curricula, cards.

- :data:`DATASETS`: official dataset key (``unc``, ``unc+``, ...) -> :class:`DatasetInfo` (config name, display
  name, splits, image folder, box format);
- :data:`SETTINGS`: the paper's training settings (``full``, ``unsup-single``, ...) -> :class:`Setting` (training
  split, label source);
- config names ``<dataset name>-<setting>``: :func:`config_name` builds one, :func:`split_config_name` parses one,
  :func:`train_split_of` names the split a config trains on.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DATASETS",
    "EVAL_SPLITS",
    "MIXUP_IMAGE_DIRS",
    "SETTINGS",
    "SOURCES",
    "DatasetInfo",
    "Setting",
    "config_name",
    "display_name",
    "split_config_name",
    "train_split_of",
]

#: Where each pseudo-label / annotation came from. ``pseudo`` is a pseudo-label whose generator is unknown
#: (a merged multi-source file converted without its ``train_separate/`` folder).
SOURCES = ("human", "template", "relation", "caption", "pseudo")

#: Evaluation splits, converted whenever their file is present (``trainval`` is not converted: for most datasets
#: the official loader builds it on the fly as train + val).
EVAL_SPLITS = ("val", "testA", "testB", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one official dataset key."""

    key: str  # the official key, also the folder and file prefix: unc, unc+, gref, gref_umd, referit, flickr
    name: str  # the name used in Hub config names
    splits: tuple[str, ...]  # splits the official loader accepts
    image_dir: str  # folder of its images under the official image root
    box_format: str  # "xywh" (top-left + size) or "xyxy"
    num_fields: int  # fields per row in the .pth list
    display_name: str = ""  # how cards name it


_COCO_DIR = "other/images/mscoco/images/train2014"
_REFCOCO_SPLITS = ("train", "val", "trainval", "testA", "testB", "train_pseudo")
DATASETS: dict[str, DatasetInfo] = {
    info.key: info
    for info in (
        DatasetInfo("unc", "refcoco", _REFCOCO_SPLITS, _COCO_DIR, "xywh", 5, "RefCOCO"),
        DatasetInfo("unc+", "refcocoplus", _REFCOCO_SPLITS, _COCO_DIR, "xywh", 5, "RefCOCO+"),
        DatasetInfo(
            "gref",
            "refcocog-google",
            ("train", "val", "train_pseudo"),
            _COCO_DIR,
            "xywh",
            5,
            "RefCOCOg (Google split)",
        ),
        DatasetInfo(
            "gref_umd",
            "refcocog-umd",
            ("train", "val", "test", "train_pseudo"),
            _COCO_DIR,
            "xywh",
            5,
            "RefCOCOg (UMD split)",
        ),
        DatasetInfo(
            "referit",
            "referit",
            ("train", "val", "trainval", "test", "train_pseudo"),
            "referit/images",
            "xyxy",
            5,
            "ReferItGame",
        ),
        DatasetInfo(
            "flickr",
            "flickr30k",
            ("train", "val", "test", "train_pseudo"),
            "Flickr30k/flickr30k-images",
            "xyxy",
            3,
            "Flickr30k Entities",
        ),
        # HiVG's mixed grounding pre-training set: the five training sets (RefCOCOg-google left out), every box
        # x, y, w, h; each row's image lies in the COCO, ReferIt or Flickr30k folder (MIXUP_IMAGE_DIRS), so the
        # dataset's folder is the image root itself and file names keep that sub-folder
        DatasetInfo("mixup", "mixup", ("train", "val", "test", "train_pseudo"), "", "xywh", 5, "HiVG mixup"),
        # the synthetic shapes of the offline demo (clipvg_hf.demo_shapes), laid out like Flickr30k
        DatasetInfo(
            "shapes",
            "shapes",
            ("train", "val", "test", "train_pseudo"),
            "shapes/images",
            "xyxy",
            3,
            "Shapes (synthetic demo)",
        ),
    )
}


#: Image folder of a ``mixup`` row: ``COCO_*`` files are MS COCO's, other rows name their source in the 2nd field.
MIXUP_IMAGE_DIRS = {"coco": _COCO_DIR, "referit": "referit/images", "flickr": "Flickr30k/flickr30k-images"}


@dataclass(frozen=True)
class Setting:
    """One of the paper's training settings and how its pack is laid out."""

    name: str
    train_split: str  # the .pth split the setting trains on (also the HF split name)
    train_source: str  # source of the training rows when it cannot be read from train_separate/
    description: str


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("full", "train", "human", "fully supervised (TransVG labels)"),
        Setting("full-ssa", "train", "human", "fully supervised, SSA-filtered train set (released for gref_umd)"),
        Setting("unsup-single", "train_pseudo", "template", "unsupervised, single-source pseudo-template labels"),
        Setting("unsup-single-ssa", "train_pseudo", "template", "unsupervised single-source, SSA-selected"),
        Setting("unsup-multi", "train_pseudo", "pseudo", "unsupervised, multi-source (template + relation + caption)"),
        Setting("unsup-multi-msa", "train_pseudo", "pseudo", "unsupervised multi-source, MSA-selected"),
    )
}


def config_name(dataset: str, setting: str) -> str:
    """Hub config name of a (dataset key, setting) pair, e.g. ``("unc+", "full") -> "refcocoplus-full"``."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; expected one of {sorted(SETTINGS)}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}")
    return f"{DATASETS[dataset].name}-{setting}"


def split_config_name(config: str) -> tuple[str, str | None]:
    """``"refcocog-umd-unsup-single"`` -> ``("refcocog-umd", "unsup-single")``; setting None if not recognised."""
    for setting in sorted(SETTINGS, key=len, reverse=True):
        if config.endswith(f"-{setting}"):
            return config[: -len(setting) - 1], setting
    return config, None


def display_name(dataset_name: str) -> str:
    """The readable name of a config's dataset part (``refcocoplus`` -> ``RefCOCO+``); unknown names unchanged."""
    for info in DATASETS.values():
        if info.name == dataset_name:
            return info.display_name or info.name
    return dataset_name


def train_split_of(config: str) -> str:
    """The split a config trains on: its setting's (``train`` or ``train_pseudo``); for an unknown setting,
    ``train_pseudo`` when the name says unsupervised, else ``train``."""
    setting = split_config_name(config)[1]
    if setting is not None:
        return SETTINGS[setting].train_split
    return "train_pseudo" if "-unsup" in config else "train"
