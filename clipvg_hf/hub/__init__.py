"""Publish CLIP-VG models and datasets on the Hugging Face Hub, with generated model and dataset cards.

- :mod:`.repo`: the error type, :class:`PushResult`, repo-id and token checks;
- :mod:`.cards`: model and dataset cards (body templates in ``templates/``), training settings;
- :mod:`.staging`: what a model / dataset repo holds (weights, ``auto_map``, remote code, processor), dry runs and
  uploads (:func:`push_model`, :func:`push_dataset`);
- :mod:`.release`: official checkpoint -> converted folder -> evaluation -> :func:`push_model`;
- :mod:`.space`: a Gradio Space demoing a published model (:func:`push_space`);
- :mod:`.cli`: the ``clipvg-push`` command (``push_to_hub.py`` in a checkout).
"""

from ..data.registry import split_config_name
from ..evaluation.results import ResultsError, check_results_for_model, load_results, weights_sha256
from .cards import (
    BASE_MODELS,
    CITATION,
    TrainingSetting,
    build_dataset_card,
    build_model_card,
    training_setting,
)
from .release import release_checkpoint
from .repo import HubPublishError, PushResult, configure_logging, resolve_token, validate_repo_id
from .space import push_space, stage_space
from .staging import count_parameters, dataset_configs, prepare_model_folder, push_dataset, push_model, weight_files

__all__ = [
    "BASE_MODELS",
    "CITATION",
    "HubPublishError",
    "PushResult",
    "ResultsError",
    "TrainingSetting",
    "build_dataset_card",
    "build_model_card",
    "check_results_for_model",
    "configure_logging",
    "count_parameters",
    "dataset_configs",
    "load_results",
    "prepare_model_folder",
    "push_dataset",
    "push_model",
    "push_space",
    "release_checkpoint",
    "resolve_token",
    "split_config_name",
    "stage_space",
    "training_setting",
    "validate_repo_id",
    "weight_files",
    "weights_sha256",
]
