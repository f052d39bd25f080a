"""The ``evaluate``-library metric ``grounding_accuracy``, shipped as packaged data: its folder loads with
``evaluate.load(str(GROUNDING_ACCURACY_PATH))`` and needs only ``evaluate`` and numpy, not clipvg_hf.

The package's own metrics (:class:`~clipvg_hf.evaluation.GroundingMetrics`, ``score_predictions``) are in
:mod:`clipvg_hf.evaluation`."""

from pathlib import Path

__all__ = ["GROUNDING_ACCURACY_PATH"]

#: Folder of the ``evaluate`` metric: ``evaluate.load(str(GROUNDING_ACCURACY_PATH))`` (needs no clipvg_hf).
GROUNDING_ACCURACY_PATH = Path(__file__).resolve().parent / "grounding_accuracy"
