"""CLIP-VG data: official split files to Hugging Face datasets, the official training transforms, loaders.

- :mod:`.splits` reads the official ``.pth`` split files safely and converts boxes;
- :mod:`.convert` writes parquet configs + a dataset card (CLI: ``data_scripts/convert_splits.py``);
- :mod:`.transforms` is the official training augmentation and the eval transform (= the image processor);
- :mod:`.dataset` gives the per-expression view, :mod:`.collate` batches it into model inputs;
- :mod:`.sampler` orders training expressions in short runs per image (each image decoded once per run).
"""

from .collate import CLIPVGCollator
from .convert import (
    EVAL_SPLITS,
    SETTINGS,
    ConversionError,
    FileReport,
    Reject,
    config_name,
    convert_dataset,
    convert_pack,
    format_summary,
    grounding_features,
    write_dataset_card,
)
from .dataset import (
    GroundingDataset,
    load_split,
    local_cache_dir,
    open_raw_image,
    sample_rng,
    streaming_samples,
)
from .sampler import ImageGroupedSampler, image_ids
from .splits import DATASETS, SOURCES, SplitFileError, SplitRow, SplitRowError, load_split_file, parse_row
from .transforms import (
    SPATIAL_WORDS,
    CLIPVGEvalTransform,
    CLIPVGTrainTransform,
    color_jitter,
    has_spatial_word,
    normalize_and_pad,
    random_size_crop,
    resize_long_side,
    resize_short_side,
    train_scales,
)

__all__ = [
    "DATASETS",
    "EVAL_SPLITS",
    "SETTINGS",
    "SOURCES",
    "SPATIAL_WORDS",
    "CLIPVGCollator",
    "CLIPVGEvalTransform",
    "CLIPVGTrainTransform",
    "ConversionError",
    "FileReport",
    "GroundingDataset",
    "ImageGroupedSampler",
    "Reject",
    "SplitFileError",
    "SplitRow",
    "SplitRowError",
    "color_jitter",
    "config_name",
    "convert_dataset",
    "convert_pack",
    "format_summary",
    "grounding_features",
    "has_spatial_word",
    "image_ids",
    "load_split",
    "local_cache_dir",
    "load_split_file",
    "normalize_and_pad",
    "open_raw_image",
    "parse_row",
    "random_size_crop",
    "resize_long_side",
    "resize_short_side",
    "sample_rng",
    "streaming_samples",
    "train_scales",
    "write_dataset_card",
]
