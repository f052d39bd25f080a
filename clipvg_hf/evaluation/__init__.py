"""Evaluation as a library: the loop (a prepared loader, the model's boxes gathered from every process, each sample
counted once), the grounding metrics (Acc@0.5, mean IoU, lmms-eval's scores of a predictions file) and the results
file the Hub cards and curricula read. The ``clipvg-evaluate`` command is :mod:`clipvg_hf.commands.evaluate`."""

from .loop import (
    check_each_sample_once,
    check_finite_boxes,
    eval_loader,
    evaluate,
    evaluate_model,
    gather_predictions,
    open_splits,
    prediction_records,
)
from .metrics import ACCURACY_IOU_THRESHOLD, LMMS_EVAL_THRESHOLDS, GroundingMetrics, score_predictions, summarize_ious
from .results import (
    METRIC,
    EvaluationResults,
    check_results_for_model,
    load_results,
    model_fingerprint,
    no_weights_message,
    weights_sha256,
    write_results,
)

__all__ = [
    "ACCURACY_IOU_THRESHOLD",
    "LMMS_EVAL_THRESHOLDS",
    "METRIC",
    "EvaluationResults",
    "GroundingMetrics",
    "check_each_sample_once",
    "check_finite_boxes",
    "check_results_for_model",
    "eval_loader",
    "evaluate",
    "evaluate_model",
    "gather_predictions",
    "load_results",
    "model_fingerprint",
    "no_weights_message",
    "open_splits",
    "prediction_records",
    "score_predictions",
    "summarize_ious",
    "weights_sha256",
    "write_results",
]
