"""CLIP-VG data: official split files to Hugging Face datasets, the official training transforms, loaders.

- :mod:`.registry` names the datasets, settings and config names (``<dataset>-<setting>``);
- :mod:`.splits` reads the official ``.pth`` split files safely and converts boxes;
- :mod:`.convert` writes parquet configs (CLI: ``clipvg-convert-splits``), :mod:`.card` their dataset card;
- :mod:`.transforms` is the official training augmentation and the eval transform (= the image processor);
- :mod:`.dataset` gives the per-expression view, :mod:`.collate` batches it into model inputs;
- :mod:`.sampler` orders training expressions in short runs per image (each image decoded once per run).
"""

from .card import register_config, write_dataset_card
from .collate import CLIPVGCollator
from .convert import (
    ConversionError,
    FileReport,
    Reject,
    convert_dataset,
    convert_pack,
    format_summary,
    grounding_features,
)
from .dataset import GroundingDataset, load_split, local_cache_dir, sample_rng, streaming_samples
from .decode import open_raw_image
from .registry import (
    DATASETS,
    EVAL_SPLITS,
    SETTINGS,
    SOURCES,
    DatasetInfo,
    Setting,
    config_name,
    display_name,
    split_config_name,
    train_split_of,
)
from .sampler import ImageGroupedSampler, image_ids, row_indices
from .splits import SplitFileError, SplitRow, SplitRowError, load_split_file, parse_row
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

# what users use; the building blocks above stay importable from here and from their modules
__all__ = [
    "DATASETS",
    "EVAL_SPLITS",
    "SETTINGS",
    "SOURCES",
    "CLIPVGCollator",
    "CLIPVGEvalTransform",
    "CLIPVGTrainTransform",
    "ConversionError",
    "DatasetInfo",
    "GroundingDataset",
    "ImageGroupedSampler",
    "Setting",
    "SplitFileError",
    "config_name",
    "convert_dataset",
    "convert_pack",
    "display_name",
    "format_summary",
    "image_ids",
    "load_split",
    "register_config",
    "row_indices",
    "split_config_name",
    "streaming_samples",
    "train_split_of",
    "write_dataset_card",
]
