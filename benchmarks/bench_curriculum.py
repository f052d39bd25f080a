"""Does the self-paced curriculum work? SSA / MSA on demo shapes with simulated pseudo-label sources of known noise.

    python -m benchmarks.bench_curriculum                       # SSA + MSA, seeds 13 and 14: about an hour on 2 cores
    python -m benchmarks.bench_curriculum --ssa_only --seeds 13  # SSA only, one seed
    python -m benchmarks.bench_curriculum --quick               # smoke run with real trainings (~1.5 min)
    python -m benchmarks.bench_curriculum --quick --oracle_only # data + oracle selection only (seconds)

1. Data: the demo's shapes (32 px, :func:`clipvg_hf.demo_run.demo_config` learns them). The training images are dealt
   round-robin to simulated pseudo-label sources; each source labels every object of its images with the right
   expression but a noisy box: ``wrong`` = another object's box of the same image, ``jitter`` = the true box
   shifted/rescaled. A row is *corrupted* when IoU(pseudo box, true box) < 0.5 (it would count as a miss). The
   pack is written in the official multi-source layout (``train_separate/<n>_shapes_train_pseudo_<source>.pth``),
   converted as ``shapes-unsup-multi``; ``val`` and ``test`` carry clean labels.
2. (a) deterministic: precision / clean recall of the kept set ``reliability >= h`` against the known corruption,
   per measurer (trained on all rows, on each source alone, and an oracle predicting the true box with noise),
   per source and h.
3. (b) clean val (and test) Acc@0.5 of: all pseudo-labels, SSA (over all rows as one source), the best single
   source, MSA; each search's number of trainings (counted as if run alone; one shared cache trains a row set once).

Outputs: ``<output-dir>/bench_curriculum.json``, ``report.md`` (the tables), ``reliability_grid_seed<s>.png`` (the
n x n SR/CR grid) and the SSA / MSA run folders.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipvg_hf.curriculum import (
    CachedTrainer,
    TrainResult,
    TrainScriptTrainer,
    in_process_scorer,
    load_scores,
)
from clipvg_hf.curriculum.multi_source import run_msa
from clipvg_hf.curriculum.plots import plot_histogram_grid
from clipvg_hf.curriculum.runner import rows_digest
from clipvg_hf.curriculum.single_source import run_ssa
from clipvg_hf.data import convert_dataset, load_split
from clipvg_hf.demo_run import build_demo_model, demo_config
from clipvg_hf.demo_shapes import ShapesSpec, write_shapes_pack
from clipvg_hf.evaluation import evaluate_model
from clipvg_hf.processing_clipvg import CLIPVGProcessor

CONFIG = "shapes-unsup-multi"
#: source -> (fraction of rows given another object's box, fraction of the other rows with a jittered box)
NOISE = {"template": (0.15, 0.0), "relation": (0.40, 0.25), "caption": (0.25, 0.50)}
PR_GRID = tuple(round(0.1 * i, 1) for i in range(10))


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x1, y1, x2, y2) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def jitter_box(box: Sequence[int], size: int, rng: np.random.Generator) -> list[int]:
    """Shift the centre by up to 0.4 of the side and rescale by 0.65-1.5, inside the image (integer pixels)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2 + rng.uniform(-0.4, 0.4) * w
    cy = (y1 + y2) / 2 + rng.uniform(-0.4, 0.4) * h
    nw, nh = w * rng.uniform(0.65, 1.5), h * rng.uniform(0.65, 1.5)
    nx1, ny1 = int(np.clip(round(cx - nw / 2), 0, size - 2)), int(np.clip(round(cy - nh / 2), 0, size - 2))
    nx2, ny2 = int(np.clip(round(cx + nw / 2), nx1 + 2, size)), int(np.clip(round(cy + nh / 2), ny1 + 2, size))
    return [nx1, ny1, nx2, ny2]


def write_pseudo_pack(
    raw: Path, sources: Sequence[str], counts: dict[str, int], spec: ShapesSpec, seed: int
) -> list[dict[str, Any]]:
    """Shapes pack whose train split is split among noisy sources; returns per-row truth in concatenation order."""
    write_shapes_pack(raw, counts, spec, seed=seed)
    split_dir = raw / "splits" / "shapes"
    clean = torch.load(split_dir / "shapes_train.pth")
    (split_dir / "shapes_train.pth").unlink()
    objects = json.loads((raw / "objects.json").read_text())
    images = sorted({row[0] for row in clean})
    owner = {name: sources[i % len(sources)] for i, name in enumerate(images)}
    separate = split_dir / "train_separate"
    separate.mkdir(exist_ok=True)
    truth: list[dict[str, Any]] = []
    for k, source in enumerate(sources):
        rng = np.random.default_rng([seed, 100 + k])
        wrong_rate, jitter_rate = NOISE[source]
        rows = []
        for file_name, box, text in (r for r in clean if owner[r[0]] == source):
            kind, pseudo = "clean", list(box)
            if rng.random() < wrong_rate:
                others = [list(b) for b in objects[file_name]["boxes"] if list(b) != list(box)]
                kind, pseudo = "wrong", others[int(rng.integers(len(others)))]
            elif rng.random() < jitter_rate:
                kind, pseudo = "jitter", jitter_box(box, spec.image_size, rng)
            rows.append((file_name, pseudo, text))
            iou = box_iou(box, pseudo)
            truth.append(
                {
                    "source": source,
                    "file_name": file_name,
                    "text": text,
                    "true_box": list(box),
                    "pseudo_box": pseudo,
                    "kind": kind,
                    "iou": iou,
                    "corrupted": iou < 0.5,
                    "source_file": f"{k + 1}_shapes_train_pseudo_{source}.pth",
                    "source_row": len(rows) - 1,
                }
            )
        torch.save(rows, separate / f"{k + 1}_shapes_train_pseudo_{source}.pth")
    return truth


def attach_row_indices(data: Path, truth: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """row_index of the converted split -> truth record (matched by source file and row)."""
    by_origin = {(t["source_file"], t["source_row"]): t for t in truth}
    out = {}
    table = load_split(str(data), CONFIG, "train_pseudo").with_format("arrow")[:]
    for expressions in table.column("expressions").to_pylist():
        for e in expressions:
            record = by_origin[(e["source_file"], int(e["source_row"]))]
            assert record["text"] == e["expression"] and record["source"] == e["source"]
            out[int(e["row_index"])] = record
    if len(out) != len(truth):
        raise RuntimeError(f"converted {len(out)} of {len(truth)} pseudo-labelled rows")
    return out


def oracle_reliability(truth: dict[int, dict[str, Any]], noise: float, size: int, seed: int) -> dict[int, float]:
    """A measurer that predicts the true box with Gaussian noise (``noise`` x image side) on each coordinate."""
    rng = np.random.default_rng(seed)
    out = {}
    for row, t in sorted(truth.items()):
        pred = np.asarray(t["true_box"], dtype=np.float64) + rng.normal(0, noise * size, 4)
        out[row] = box_iou(pred, t["pseudo_box"])
    return out


def kept_stats(
    reliability: dict[int, float], rows: Sequence[int], truth: dict[int, dict[str, Any]], h: float
) -> dict[str, Any]:
    """Precision (clean share of the kept set) and recall (of clean rows) of ``reliability >= h`` over ``rows``."""
    corrupted = {r for r in rows if truth[r]["corrupted"]}
    kept = [r for r in rows if reliability[r] >= h]
    kept_bad = sum(r in corrupted for r in kept)
    clean_total = len(rows) - len(corrupted)
    return {
        "h": h,
        "rows": len(rows),
        "kept": len(kept),
        "source_corruption": len(corrupted) / max(1, len(rows)),
        "kept_corruption": kept_bad / len(kept) if kept else None,
        "precision": (len(kept) - kept_bad) / len(kept) if kept else None,
        "clean_recall": (len(kept) - kept_bad) / max(1, clean_total),
        "corrupted_removed": 1 - kept_bad / len(corrupted) if corrupted else None,
    }


class SharedTrainings:
    """A train function that trains each distinct row set once for all searches of one seed, and logs each run."""

    def __init__(self, trainer: TrainScriptTrainer):
        self.trainer, self.cache, self.seconds = trainer, {}, 0.0

    def __call__(self, rows: Sequence[int], output_dir: Path) -> TrainResult:
        key = rows_digest(rows)
        if key not in self.cache:
            started = time.time()
            self.cache[key] = self.trainer(rows, output_dir)
            took = time.time() - started
            self.seconds += took
            print(
                f"  trained {len(rows):5d} rows -> val Acc@0.5 {self.cache[key].val_accuracy:.3f} ({took:.0f} s, "
                f"{output_dir.name})",
                flush=True,
            )
        return self.cache[key]


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def pr_table(pr: dict[str, dict[str, list[dict[str, Any]]]], hs: Sequence[float]) -> str:
    """Markdown: one line per (measurer, source, h): kept, corruption before/after, precision, clean recall."""
    lines = [
        (
            "| measurer | source | h | kept / rows | corruption: source → kept | precision | clean recall | "
            "corrupted removed |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for measurer, per_source in pr.items():
        for source, points in per_source.items():
            for p in points:
                if p["h"] in hs:
                    lines.append(
                        f"| {measurer} | {source} | {p['h']:.1f} | {p['kept']} / {p['rows']} | "
                        f"{p['source_corruption']:.3f} → {fmt(p['kept_corruption'])} | "
                        f"{fmt(p['precision'])} | {fmt(p['clean_recall'])} | {fmt(p['corrupted_removed'])} |"
                    )
    return "\n".join(lines) + "\n"


def training_arguments(init: Path, seed: int, args: argparse.Namespace) -> list[str]:
    """The training module's arguments of every training (all but the data and the rows): ``init`` trained for
    ``args.train_steps`` optimizer steps (``args.epochs`` when None), constant or cosine learning rate after warm-up,
    fused AdamW, no augmentation, on the CPU."""
    length = (
        ["--num_epochs", str(args.epochs)] if args.train_steps is None else ["--train_steps", str(args.train_steps)]
    )
    return [
        "--model_name_or_path",
        str(init),
        *length,
        "--optim",
        "adamw_torch_fused",
        "--per_device_batch_size",
        str(args.batch_size),
        "--eval_batch_size",
        "256",
        "--learning_rate",
        str(args.learning_rate),
        "--scheduler_step",
        "step",
        "--warmup_steps",
        str(args.warmup_steps),
        "--lr_scheduler",
        args.lr_scheduler,
        "--no_aug_crop",
        "--no_aug_scale",
        "--no_aug_color",
        "--no_aug_translate",
        "--num_workers",
        "1",
        "--seed",
        str(seed),
        "--cpu",
    ]


def run_seed(
    seed: int,
    args: argparse.Namespace,
    data: Path,
    truth: dict[int, dict[str, Any]],
    rows_by_source: dict[str, list[int]],
    init: Path,
    out: Path,
) -> dict[str, Any]:
    """SSA over all rows, MSA over the sources, their selections' corruption and the trained measurers' P/R."""
    train_args = training_arguments(init, seed, args)
    script = TrainScriptTrainer(data, CONFIG, train_args, launcher=[sys.executable])
    shared = SharedTrainings(script)
    scorer = in_process_scorer(data, CONFIG, "train_pseudo", cpu=True, plot=False)
    all_rows = sorted(truth)
    started = time.time()
    print(
        f"[seed {seed}] SSA over all {len(all_rows)} rows ({args.ssa_search} search over {args.thresholds})",
        flush=True,
    )
    ssa_trainer = CachedTrainer(shared, args.batch_size)
    ssa = run_ssa(all_rows, ssa_trainer, scorer, out / "ssa", thresholds=args.thresholds, strategy=args.ssa_search)
    msa = None
    if not args.ssa_only:
        print(f"[seed {seed}] MSA over {list(rows_by_source)} ({args.msa_search} search, h0={args.h0})", flush=True)
        msa = run_msa(
            rows_by_source,
            CachedTrainer(shared, args.batch_size),
            scorer,
            out / "msa",
            h0=args.h0,
            thresholds=args.msa_thresholds,
            strategy=args.msa_search,
        )

    # (a) precision / recall of every measurer's kept sets
    reliabilities = {"all": load_scores(out / "ssa" / "scores").as_dict()}
    for source in rows_by_source if msa else ():
        reliabilities[source] = load_scores(out / "msa" / "scores" / source).as_dict()
    groups = {**rows_by_source, "all": all_rows}
    pr = {
        m: {s: [kept_stats(rel, rows, truth, h) for h in PR_GRID] for s, rows in groups.items()}
        for m, rel in reliabilities.items()
    }
    grid_png = None
    if msa is not None:  # the n x n SR/CR grid of the per-source measurers
        cells = {
            (m, s): np.array([reliabilities[m][r] for r in rows_by_source[s]])
            for m in rows_by_source
            for s in rows_by_source
        }
        grid_png = plot_histogram_grid(
            cells,
            list(rows_by_source),
            list(rows_by_source),
            out.parent / f"reliability_grid_seed{seed}.png",
            bins=100,
        )

    # (b) accuracies: val from training (best epoch), test from the saved best model
    ssa_selected = sorted(int(r) for r in json.loads((out / "ssa" / "selected_rows.json").read_text()))
    methods = {
        "all pseudo-labels": {
            "val": ssa["measurer"]["val_accuracy"],
            "model": ssa["measurer"]["model_dir"],
            "rows": all_rows,
            "trainings": 1,
            "detail": f"{len(all_rows)} rows",
        },
        "SSA": {
            "val": ssa["best"]["val_accuracy"],
            "model": ssa["best"]["model_dir"],
            "rows": ssa_selected,
            "trainings": ssa["trainings"]["total"],
            "detail": f"h={ssa['best']['h']:.2f}",
        },
    }
    if msa is not None:
        best_single = max(rows_by_source, key=lambda s: msa["measurers"][s]["val_accuracy"])
        msa_selected = sorted(int(r) for r in json.loads((out / "msa" / "selected_rows.json").read_text()))
        methods["best single source"] = {
            "val": msa["measurers"][best_single]["val_accuracy"],
            "model": msa["measurers"][best_single]["model_dir"],
            "rows": rows_by_source[best_single],
            "trainings": len(rows_by_source),
            "detail": best_single,
        }
        methods["MSA"] = {
            "val": msa["best"]["val_accuracy"],
            "model": msa["best"]["model_dir"],
            "rows": msa_selected,
            "trainings": msa["trainings"],
            "detail": ", ".join(f"{s}: M[{v['measurer']}] h={v['h']:.2f}" for s, v in msa["selected"].items()),
        }
    clean_total = sum(not t["corrupted"] for t in truth.values())
    for m in methods.values():
        m["test"] = evaluate_model(m["model"], str(data), CONFIG, ["test"])["splits"]["test"]["accuracy"]
        m["num_rows"] = len(m["rows"])
        m["corruption"] = float(np.mean([truth[r]["corrupted"] for r in m["rows"]])) if m["rows"] else None
        m["clean_recall"] = sum(not truth[r]["corrupted"] for r in m["rows"]) / clean_total
        del m["rows"]
    seconds = time.time() - started
    print(
        f"[seed {seed}] done in {seconds:.0f} s ({len(shared.cache)} distinct trainings, {shared.seconds:.0f} s "
        f"training)",
        flush=True,
    )
    return {
        "seed": seed,
        "methods": methods,
        "precision_recall": pr,
        "grid_png": grid_png,
        "ssa_curve": [{k: p[k] for k in ("h", "num_samples", "val_accuracy", "status")} for p in ssa["curve"]],
        "ssa_decisions": ssa["decisions"],
        "msa_decisions": msa and msa["decisions"],
        "distinct_trainings": len(shared.cache),
        "training_seconds": round(shared.seconds, 1),
        "seconds": round(seconds, 1),
    }


def accuracy_table(results: list[dict[str, Any]]) -> str:
    """Markdown: per method, val / test Acc@0.5 per seed and mean, corruption of the training set, trainings."""
    seeds = [r["seed"] for r in results]
    lines = [
        "| method | " + " | ".join(f"val (seed {s})" for s in seeds) + " | val mean | test mean | "
        "train rows | corruption | clean recall | trainings | choice (first seed) |",
        "|---|" + "---:|" * (len(seeds) + 6) + "---|",
    ]
    for name in results[0]["methods"]:
        ms = [r["methods"][name] for r in results]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{m['val']:.3f}" for m in ms)
            + f" | {np.mean([m['val'] for m in ms]):.3f} | {np.mean([m['test'] for m in ms]):.3f} | "
            f"{np.mean([m['num_rows'] for m in ms]):.0f} | {np.mean([m['corruption'] for m in ms]):.3f} | "
            f"{np.mean([m['clean_recall'] for m in ms]):.3f} | "
            + "/".join(str(m["trainings"]) for m in ms)
            + f" | {ms[0]['detail']} |"
        )
    return "\n".join(lines) + "\n"


def _write(out: Path, summary: dict[str, Any], report: str, load: float, started: float) -> None:
    summary.update(load_average_after=os.getloadavg()[0], wall_seconds=round(time.time() - started, 1))
    (out / "bench_curriculum.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "report.md").write_text(report)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/bench_curriculum"))
    parser.add_argument("--sources", nargs="+", default=["template", "relation"], choices=list(NOISE))
    parser.add_argument("--train_images", type=int, default=1500)
    parser.add_argument("--val_images", type=int, default=100)
    parser.add_argument("--test_images", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=40, help="epochs per training when --train_steps is 0")
    parser.add_argument(
        "--train_steps",
        type=int,
        default=1400,
        help="optimizer steps per training, whatever its set size (rounded up to whole epochs); "
        "0: --epochs instead. Fewer than ~1000: the measurer does not learn",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 14], help="training seeds (data: --data_seed)")
    parser.add_argument("--data_seed", type=int, default=0)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.5, 0.7], help="SSA's h candidates")
    parser.add_argument("--ssa_search", choices=("grid", "bisect"), default="grid")
    parser.add_argument("--msa_search", choices=("grid", "bisect"), default="grid")
    parser.add_argument(
        "--msa_thresholds",
        type=float,
        nargs="+",
        default=[0.0, 0.5],
        help="h candidates when MSA tunes a source (each costs a training per source)",
    )
    parser.add_argument("--h0", type=float, default=0.5)
    parser.add_argument(
        "--lr_scheduler",
        choices=("constant", "cosine"),
        default="constant",
        help="after warm-up; a cosine squeezed into a short step budget decays before noisy data is learnt",
    )
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--warmup_steps", type=int, default=50)
    parser.add_argument("--oracle_noise", type=float, default=0.05, help="oracle measurer noise (x image side)")
    parser.add_argument("--ssa_only", action="store_true", help="skip MSA (and best single source, the grid)")
    parser.add_argument("--oracle_only", action="store_true", help="only the data and the oracle measurer's (a)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny data, 1 epoch, h in {0, 0.5}, 1 seed")
    args = parser.parse_args(argv)
    args.train_steps = args.train_steps or None
    if args.quick:
        args.train_images, args.val_images, args.test_images, args.epochs, args.train_steps = 48, 16, 8, 1, None
        args.seeds, args.thresholds, args.batch_size, args.warmup_steps = args.seeds[:1], [0.0, 0.5], 16, 2
        args.msa_thresholds = [0.0, 0.5]
    started = time.time()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    # one thread per training process: the tiny model is overhead-bound, and a second thread only fights the loader
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = args.output_dir
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    load = os.getloadavg()[0]

    spec = ShapesSpec(image_size=32, min_side=0.25, max_side=0.45)
    counts = {"train": args.train_images, "val": args.val_images, "test": args.test_images}
    truth_list = write_pseudo_pack(out / "raw", args.sources, counts, spec, args.data_seed)
    convert_dataset(out / "raw" / "splits", out / "raw" / "image_data", out / "data", "shapes", "unsup-multi")
    truth = attach_row_indices(out / "data", truth_list)
    (out / "truth.json").write_text(json.dumps({str(r): t for r, t in sorted(truth.items())}) + "\n")
    rows_by_source = {s: sorted(r for r, t in truth.items() if t["source"] == s) for s in args.sources}
    processor = CLIPVGProcessor.from_defaults(spec.image_size)

    oracle = oracle_reliability(truth, args.oracle_noise, spec.image_size, args.data_seed)
    groups = {**rows_by_source, "all": sorted(truth)}
    oracle_pr = {
        f"oracle (σ={args.oracle_noise})": {
            s: [kept_stats(oracle, rows, truth, h) for h in PR_GRID] for s, rows in groups.items()
        }
    }
    sources_summary = {
        s: {
            "rows": len(rows),
            "wrong": sum(truth[r]["kind"] == "wrong" for r in rows),
            "jitter": sum(truth[r]["kind"] == "jitter" for r in rows),
            "corrupted": sum(truth[r]["corrupted"] for r in rows),
        }
        for s, rows in rows_by_source.items()
    }
    print(f"pseudo-labelled train rows per source: {json.dumps(sources_summary)}", flush=True)

    oracle_text = pr_table(oracle_pr, [0.0, 0.3, 0.5, 0.7, 0.9])
    sources_text = (
        "Sources (corrupted = IoU(pseudo, true) < 0.5): "
        + "; ".join(
            f"{s}: {v['rows']} rows, {v['wrong']} wrong-object, {v['jitter']} jittered, "
            f"{v['corrupted']} corrupted ({v['corrupted'] / v['rows']:.1%})"
            for s, v in sources_summary.items()
        )
        + "\n"
    )
    summary = {
        "command": "python -m benchmarks.bench_curriculum " + " ".join(argv if argv is not None else sys.argv[1:]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "noise": {s: NOISE[s] for s in args.sources},
        "sources": sources_summary,
        "oracle_precision_recall": oracle_pr,
        "seeds": [],
        "grid_png": [],
        "load_average_before": load,
    }
    report = sources_text + "\n(a) Oracle measurer, kept set `reliability >= h`:\n\n" + oracle_text
    results: list[dict[str, Any]] = []
    for seed in [] if args.oracle_only else args.seeds:
        init = out / f"seed{seed}" / "init"  # the demo's model, initialised with the training seed
        build_demo_model(demo_config(spec.image_size), seed).save_pretrained(init)
        processor.save_pretrained(init)
        results.append(run_seed(seed, args, out / "data", truth, rows_by_source, init, out / f"seed{seed}"))
        report = (
            sources_text
            + "\n(a) Kept set `reliability >= h` against the known corruption "
            + f"(trained measurers of seed {results[0]['seed']}; `all` = measurer trained on all rows):\n\n"
            + pr_table({**oracle_pr, **results[0]["precision_recall"]}, [0.0, 0.3, 0.5, 0.7, 0.9])
            + f"\n(b) Clean Acc@0.5 (val: selection split; test: held out), seeds {[r['seed'] for r in results]};"
            + " trainings = distinct training runs the method needs on its own, per seed:\n\n"
            + accuracy_table(results)
        )
        summary.update(seeds=results, grid_png=[r["grid_png"] for r in results if r["grid_png"]])
        _write(out, summary, report, load, started)  # after every seed, so a cut-short run still reports
    _write(out, summary, report, load, started)
    print("\n" + report)
    if summary["grid_png"]:
        print(f"grid picture(s): {', '.join(str(p) for p in summary['grid_png'])}")
    print(
        f"wall {summary['wall_seconds']:.0f} s; load average {load:.2f} -> {summary['load_average_after']:.2f}; "
        f"JSON {out / 'bench_curriculum.json'}"
    )
    return summary


if __name__ == "__main__":
    main()
