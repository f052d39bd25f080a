"""Run under ``torchrun --nproc_per_node 2``: the evaluate metric beside the project's evaluation loop, per split.

``argv``: model folder, dataset folder, metric folder, output folder. For every fixture split, three numbers sets:
``project`` from :func:`clipvg_hf.evaluation.evaluate` (gathered IoUs, padding duplicates dropped),
``gathered`` from the metric fed with the gathered boxes of :func:`clipvg_hf.evaluation.gather_predictions`, and
``distributed`` from the metric in evaluate's own multi-process mode (``num_process`` / ``process_id``), each rank
adding only its own shard of a loader prepared with ``even_batches=False``. Rank 0 writes ``<out>/results.json``.
"""

import json
import sys
from pathlib import Path

import datasets
import evaluate
import torch
from accelerate import Accelerator, DataLoaderConfiguration

from clipvg_hf import evaluation
from clipvg_hf.evaluation import eval_loader, gather_predictions, summarize_ious
from clipvg_hf.loading import load_model_and_processor

SPLITS = (
    ("refcoco-unsup-single", "val"),
    ("refcoco-unsup-single", "testA"),
    ("referit-unsup-single", "test"),
    ("flickr30k-unsup-single", "test"),
)
THRESHOLDS = (0.25, 0.5, 0.75)
BATCH = 4


def project_numbers(ious: torch.Tensor) -> dict:
    """The evaluation loop's figures, with hit counts recovered from its per-sample IoUs."""
    out = summarize_ious(ious)
    for t in THRESHOLDS:
        out[f"hits@{t:g}"] = int((ious.double() >= t).sum())
    return out


@torch.no_grad()
def add_own_shard(metric, model, loader) -> None:
    """Add this rank's own (prediction, target) pairs, not gathered.

    In evaluate's multi-process mode every process must add something, or the main process waits for its cache file
    and fails: a rank whose shard is empty (4 samples in one batch of 4 over 2 processes) adds an empty batch.
    """
    empty = torch.zeros(0, 4)
    metric.add_batch(predictions=empty, references=empty)
    for batch in loader:
        batch.pop("row_index")
        labels = batch.pop("labels")
        metric.add_batch(predictions=model(**batch).pred_boxes[:, 0], references=labels)


def main(model_dir: str, data_dir: str, metric_dir: str, out: Path) -> None:
    accelerator = Accelerator(cpu=True)
    uneven = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(even_batches=False))
    assert accelerator.num_processes == 2, accelerator.num_processes
    rank, world = accelerator.process_index, accelerator.num_processes
    model, processor = load_model_and_processor(model_dir)
    results = {}
    for config, name in SPLITS:
        split = datasets.load_dataset(data_dir, config, split=name)
        project = evaluation.evaluate(model, eval_loader(split, processor, accelerator, batch_size=BATCH), accelerator)
        project = project.per_sample()[0]
        gathered = evaluate.load(metric_dir, keep_in_memory=True)
        loader = eval_loader(split, processor, accelerator, batch_size=BATCH)
        for boxes, labels, _ in gather_predictions(model, loader, accelerator):
            gathered.add_batch(predictions=boxes, references=labels)
        shared = evaluate.load(
            metric_dir,
            num_process=world,
            process_id=rank,
            experiment_id=f"{config}-{name}",
            cache_dir=str(out / "cache"),
            timeout=60,
        )
        add_own_shard(shared, model, eval_loader(split, processor, uneven, batch_size=BATCH))
        distributed = shared.compute(iou_thresholds=THRESHOLDS)  # None on rank 1
        results[f"{config}/{name}"] = {
            "project": project_numbers(project),
            "gathered": gathered.compute(iou_thresholds=THRESHOLDS),
            "distributed": distributed,
        }
    if accelerator.is_main_process:
        (out / "results.json").write_text(json.dumps(results, indent=1))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]))
