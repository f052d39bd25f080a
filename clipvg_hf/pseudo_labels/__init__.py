"""Pseudo-language labels (template, relation, caption) for any image collection, from transformers pipelines.

- :mod:`.templates`: the official Pseudo-Q / CLIP-VG template rules, exactly (:class:`TemplateEngine`);
- :mod:`.detections`, :mod:`.attributes`, :mod:`.captions`: the model stages (detector, zero-shot attribute
  classifier on box crops, captioner) and the intermediate detections dataset;
- :mod:`.relations`: geometric subject-predicate-object labels (in place of RelTR) and the plug-in interface;
- :mod:`.writer`: labels into the project's dataset format; :mod:`.official_splits`: the same labels as the official
  split files; :mod:`.stages`: the detection and label stages that the ``clipvg-pseudo-label`` command
  (:mod:`clipvg_hf.commands.pseudo_label`) runs.
"""

from .captions import CaptionMatcher, subject_words
from .relations import GeometricRelations, Relation, RelationModel, relation_text
from .templates import OFFICIAL_SEED, Candidate, Detection, ImageDetections, TemplateConfig, TemplateEngine
from .vocab import ClassGroups, attribute_vocabulary, coco_classes, visual_genome_classes

__all__ = [
    "OFFICIAL_SEED",
    "Candidate",
    "CaptionMatcher",
    "ClassGroups",
    "Detection",
    "GeometricRelations",
    "ImageDetections",
    "Relation",
    "RelationModel",
    "TemplateConfig",
    "TemplateEngine",
    "attribute_vocabulary",
    "coco_classes",
    "relation_text",
    "subject_words",
    "visual_genome_classes",
]
