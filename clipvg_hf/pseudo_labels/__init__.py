"""Pseudo-language labels (template, relation, caption) for any image collection, from transformers pipelines."""

from .templates import OFFICIAL_SEED, Candidate, Detection, ImageDetections, TemplateConfig, TemplateEngine
from .vocab import ClassGroups, attribute_vocabulary, coco_classes, visual_genome_classes

__all__ = [
    "OFFICIAL_SEED",
    "Candidate",
    "ClassGroups",
    "Detection",
    "ImageDetections",
    "TemplateConfig",
    "TemplateEngine",
    "attribute_vocabulary",
    "coco_classes",
    "visual_genome_classes",
]
