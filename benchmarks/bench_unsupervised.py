"""The unsupervised method end to end: pseudo-labels from a noisy detector, selected by SSA / MSA, over seeds.

    nice python -m benchmarks.bench_unsupervised                # 3 seeds, 1000 steps a training: ~1.5 h, 2 cores
    python -m benchmarks.bench_unsupervised --seeds 13          # one training seed (~30 min)
    python -m benchmarks.bench_unsupervised --train_steps 1400  # a longer budget for every training
    python -m benchmarks.bench_unsupervised --quick             # smoke run with real trainings (~1.5 min)

Does training on the pseudo-labels that the multi-source self-paced curriculum (MSA) keeps beat training on all of
them? ``bench_pseudo_labels`` makes real pseudo-labels from a noisy detector; ``bench_curriculum`` runs SSA / MSA on
simulated sources. This benchmark chains the two:

1. Data (``bench_pseudo_labels.accuracy`` without its trainings; one data seed, ``--data_seed`` 13): the demo's shapes
   scenes (32 px; ``--train_images`` 1500, 200 val and 200 test images), the *oracle detector* with injected noise
   (``--missed`` 0.1 objects missed, ``--wrong_class`` 0.1 wrong shape class, ``--jitter`` 0.2 jittered boxes),
   template and geometric relation labels from ``clipvg_hf.pseudo_labels`` into ``shapes-unsup-single`` /
   ``shapes-unsup-multi``, with the scenes' clean val / test splits copied next to them. Label counts and precision
   per source (box IoU >= 0.5 with an object the text names) are reported, also for each method's training set.
2. Per training seed (``--seeds`` 13 14 15; the model is initialised with it), test Acc@0.5 on the scenes' true
   expressions of the demo model trained on (a) all pseudo-labels (template + relation; SSA's measurer), (b) SSA over
   all of them as one source (h on ``--thresholds``), (c) MSA over the two sources (h0 = ``--h0``, h on
   ``--msa_thresholds``), (d) the true expressions (the supervised ceiling). SSA and MSA choose on the clean val
   split. Every training has the arguments of ``bench_curriculum`` (the same ``--train_steps`` optimizer steps, batch
   64, lr 5e-4, 50 warm-up steps then constant, fused AdamW, no augmentation, one CPU thread); SSA and MSA share one
   cache, so a row set is trained once per seed: about 11 distinct trainings per seed (SSA 3, MSA up to 7, the true
   expressions 1).

The step budget: trained on all pseudo-labels of data seed 13 with seed 13 for 600 steps, the demo model (8 fusion
heads, sharper initial attention: it leaves its loss plateau within 3-4 demo epochs) reaches val Acc@0.5 0.62-0.69 (seeds 13-15)
as a measurer; a run whose all-pseudo-label measurer stays under val 0.5 says so (its reliability scores are noise).

Outputs: ``--output`` (JSON: per-seed and mean accuracies, label counts and precision, trainings per method, wall
time, CPU, load average) and the printed table; the runs under ``--work_dir`` (default: ``work/`` beside the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_curriculum import SharedTrainings, training_arguments
from benchmarks.bench_pseudo_labels import accuracy, label_hits

CONFIG = "shapes-unsup-multi"
SOURCES = ("template", "relation")
METHODS = ("all pseudo-labels", "SSA", "MSA", "true expressions")
MARKER = ".bench_unsupervised"
LEARNED = 0.5  # val Acc@0.5 of the all-pseudo-label measurer under which its reliability scores mean little


def build_data(work: Path, train_images: int, noise: dict[str, float], seed: int) -> dict[str, Any]:
    """Scenes, noisy oracle detections and their pseudo-labels as ``bench_pseudo_labels.accuracy`` makes them
    (``work/data``: the scenes, ``work/noise``: the pseudo-labels), then the clean val / test splits copied next to
    the pseudo-labels; returns accuracy's label precision and counts."""
    from clipvg_hf.pseudo_labels.writer import write_card

    labels = accuracy(work, train_images, 0, noise, seed=seed, train=False)
    manifest = json.loads((work / "noise" / "pseudo_labels.json").read_text())
    for config in manifest["configs"]:
        for split in ("val", "test"):
            for path in (work / "data" / "shapes-full").glob(f"{split}-*.parquet"):
                shutil.copy(path, work / "noise" / config / path.name)
    write_card(work / "noise", manifest)
    return labels


def row_correctness(folder: Path, objects: dict[str, Any]) -> dict[int, bool]:
    """row_index -> whether the pseudo-label is right, by ``bench_pseudo_labels.label_hits``' rule."""
    return {row: ok for row, _, ok in label_hits(folder, objects)}


def set_stats(rows: list[int], correct: dict[int, bool], rows_by_source: dict[str, list[int]]) -> dict[str, Any]:
    """Size and label precision of a training set, in all and per source."""
    chosen = set(rows)
    per_source = {}
    for source, source_rows in rows_by_source.items():
        kept = [r for r in source_rows if r in chosen]
        per_source[source] = {
            "rows": len(kept),
            "of": len(source_rows),
            "precision": float(np.mean([correct[r] for r in kept])) if kept else None,
        }
    return {
        "num_rows": len(rows),
        "precision": float(np.mean([correct[r] for r in rows])) if rows else None,
        "per_source": per_source,
    }


def run_seed(
    seed: int, args: argparse.Namespace, work: Path, rows_by_source: dict[str, list[int]], correct: dict[int, bool]
) -> dict[str, Any]:
    """The four trainings' test Acc@0.5 of one training seed, with the SSA / MSA choices and training counts."""
    from clipvg_hf.curriculum import CachedTrainer, TrainScriptTrainer, in_process_scorer
    from clipvg_hf.curriculum.multi_source import run_msa
    from clipvg_hf.curriculum.reliability import expression_sources
    from clipvg_hf.curriculum.single_source import run_ssa
    from clipvg_hf.data import load_split
    from clipvg_hf.demo_run import build_demo_model, demo_config
    from clipvg_hf.evaluation import evaluate_model
    from clipvg_hf.processing_clipvg import CLIPVGProcessor

    started = time.time()
    out = work / f"seed{seed}"
    init = out / "init"  # the demo's model, initialised with the training seed
    build_demo_model(demo_config(32), seed).save_pretrained(init)
    CLIPVGProcessor.from_defaults(32).save_pretrained(init)
    train_args = training_arguments(init, seed, args)
    pseudo = work / "noise"
    shared = SharedTrainings(TrainScriptTrainer(pseudo, CONFIG, train_args, launcher=[sys.executable]))
    scorer = in_process_scorer(pseudo, CONFIG, "train_pseudo", cpu=True, plot=False)
    all_rows = sorted(r for rows in rows_by_source.values() for r in rows)

    print(f"[seed {seed}] SSA over all {len(all_rows)} pseudo-labels (h in {args.thresholds})", flush=True)
    ssa = run_ssa(
        all_rows,
        CachedTrainer(shared, args.batch_size),
        scorer,
        out / "ssa",
        thresholds=args.thresholds,
        strategy=args.ssa_search,
    )
    if ssa["measurer"]["val_accuracy"] < LEARNED:
        print(
            f"[seed {seed}] warning: the measurer trained on all pseudo-labels reached only val Acc@0.5 "
            f"{ssa['measurer']['val_accuracy']:.3f} in {args.train_steps} steps; raise --train_steps",
            flush=True,
        )
    print(f"[seed {seed}] MSA over {list(rows_by_source)} (h0={args.h0}, h in {args.msa_thresholds})", flush=True)
    msa = run_msa(
        rows_by_source,
        CachedTrainer(shared, args.batch_size),
        scorer,
        out / "msa",
        h0=args.h0,
        thresholds=args.msa_thresholds,
        strategy=args.msa_search,
    )
    print(f"[seed {seed}] true expressions", flush=True)
    true_rows = sorted(expression_sources(load_split(str(work / "data"), "shapes-full", "train")))
    truth_started = time.time()
    truth = TrainScriptTrainer(work / "data", "shapes-full", train_args, launcher=[sys.executable])(
        true_rows, out / "true_expressions"
    )
    truth_seconds = time.time() - truth_started
    print(f"  trained {len(true_rows):5d} rows -> val Acc@0.5 {truth.val_accuracy:.3f} ({truth_seconds:.0f} s)")

    def selected(folder: Path) -> list[int]:
        return sorted(int(r) for r in json.loads((folder / "selected_rows.json").read_text()))

    methods: dict[str, dict[str, Any]] = {
        "all pseudo-labels": {
            "val": ssa["measurer"]["val_accuracy"],
            "model": ssa["measurer"]["model_dir"],
            "trainings": 1,
            "choice": f"{len(all_rows)} rows",
            **set_stats(all_rows, correct, rows_by_source),
        },
        "SSA": {
            "val": ssa["best"]["val_accuracy"],
            "model": ssa["best"]["model_dir"],
            "trainings": ssa["trainings"]["total"],
            "h": ssa["best"]["h"],
            "choice": f"h={ssa['best']['h']:.2f}",
            **set_stats(selected(out / "ssa"), correct, rows_by_source),
        },
        "MSA": {
            "val": msa["best"]["val_accuracy"],
            "model": msa["best"]["model_dir"],
            "trainings": msa["trainings"],
            "selected": msa["selected"],
            "choice": "; ".join(f"{s}: M[{v['measurer']}] h={v['h']:.2f}" for s, v in msa["selected"].items()),
            **set_stats(selected(out / "msa"), correct, rows_by_source),
        },
    }
    for m in methods.values():
        m["test"] = evaluate_model(m["model"], str(pseudo), CONFIG, ["test"])["splits"]["test"]["accuracy"]
    methods["true expressions"] = {
        "val": truth.val_accuracy,
        "model": truth.model_dir,
        "trainings": 1,
        "choice": f"{len(true_rows)} true expressions",
        "num_rows": len(true_rows),
        "precision": 1.0,
        "test": evaluate_model(truth.model_dir, str(work / "data"), "shapes-full", ["test"])["splits"]["test"][
            "accuracy"
        ],
    }
    seconds = time.time() - started
    print(
        f"[seed {seed}] done in {seconds:.0f} s ({len(shared.cache) + 1} distinct trainings, "
        f"{shared.seconds + truth_seconds:.0f} s training): "
        + ", ".join(f"{name} {m['test']:.3f}" for name, m in methods.items()),
        flush=True,
    )
    return {
        "seed": seed,
        "methods": methods,
        "measurer_learned": ssa["measurer"]["val_accuracy"] >= LEARNED,
        "ssa_curve": [{k: p[k] for k in ("h", "num_samples", "val_accuracy", "status")} for p in ssa["curve"]],
        "ssa_decisions": ssa["decisions"],
        "msa_decisions": msa["decisions"],
        "distinct_trainings": len(shared.cache) + 1,
        "training_seconds": round(shared.seconds + truth_seconds, 1),
        "seconds": round(seconds, 1),
    }


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: test (and val) Acc@0.5 per seed and their means, trainings per seed; MSA against all labels."""
    means = {}
    for name in METHODS:
        ms = [r["methods"][name] for r in results]
        means[name] = {
            "test": {str(r["seed"]): m["test"] for r, m in zip(results, ms)},
            "test_mean": float(np.mean([m["test"] for m in ms])),
            "val_mean": float(np.mean([m["val"] for m in ms])),
            "trainings": [m["trainings"] for m in ms],
            "train_rows_mean": float(np.mean([m["num_rows"] for m in ms])),
            "precision_mean": float(np.mean([m["precision"] for m in ms])),
        }
    wins = sum(r["methods"]["MSA"]["test"] > r["methods"]["all pseudo-labels"]["test"] for r in results)
    unlearned = [r["seed"] for r in results if not r["measurer_learned"]]
    return {
        "methods": means,
        "msa_beats_all_pseudo_labels": {"seeds": wins, "of": len(results)},
        "seeds_whose_measurer_did_not_learn": unlearned,
    }


def table(results: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """Markdown: method | test Acc@0.5 per seed | mean | trainings, then the MSA line."""
    seeds = [r["seed"] for r in results]
    lines = [
        "| method | " + " | ".join(f"test Acc@0.5 seed {s}" for s in seeds) + " | mean | trainings |",
        "|---|" + "---:|" * (len(seeds) + 2),
    ]
    for name in METHODS:
        ms = [r["methods"][name] for r in results]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{m['test']:.3f}" for m in ms)
            + f" | {summary['methods'][name]['test_mean']:.3f} | "
            + "/".join(str(m["trainings"]) for m in ms)
            + " |"
        )
    wins = summary["msa_beats_all_pseudo_labels"]
    text = "\n".join(lines) + f"\n\nMSA > all pseudo-labels: {wins['seeds']} of {wins['of']} seeds\n"
    if summary["seeds_whose_measurer_did_not_learn"]:
        text += (
            f"(seeds {summary['seeds_whose_measurer_did_not_learn']}: the all-pseudo-label measurer stayed under val "
            f"Acc@0.5 {LEARNED}, so SSA / MSA selected with unlearned reliability scores)\n"
        )
    return text


def choices(results: list[dict[str, Any]]) -> str:
    """One line per seed: what SSA and MSA chose, and the size / label precision of every training set."""
    lines = []
    for r in results:
        ms = r["methods"]
        sets = ", ".join(f"{n} {m['num_rows']} rows (precision {m['precision']:.3f})" for n, m in ms.items())
        lines.append(f"seed {r['seed']}: SSA {ms['SSA']['choice']}; MSA {ms['MSA']['choice']}; {sets}")
    return "\n".join(lines) + "\n"


def prepare_work_dir(work: Path) -> None:
    """An empty work folder; one this benchmark did not make is refused rather than deleted."""
    if work.exists() and any(work.iterdir()):
        if not (work / MARKER).is_file():
            raise SystemExit(f"--work_dir {work} holds files this benchmark did not write; choose another folder")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("benchmarks.bench_unsupervised work folder (deleted by the next run)\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("outputs/bench_unsupervised/bench_unsupervised.json"))
    parser.add_argument("--work_dir", type=Path, default=None, help="runs and data (default: work/ beside --output)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15], help="training (model init) seeds")
    parser.add_argument("--data_seed", type=int, default=13, help="scenes and detector noise")
    parser.add_argument("--train_images", type=int, default=1500)
    parser.add_argument("--missed", type=float, default=0.1, help="detector noise: share of objects missed")
    parser.add_argument("--wrong_class", type=float, default=0.1, help="detector noise: share given a wrong shape")
    parser.add_argument("--jitter", type=float, default=0.2, help="detector noise: share of jittered boxes")
    parser.add_argument(
        "--train_steps",
        type=int,
        default=1000,
        help="optimizer steps of every training, whatever its set size (rounded up to whole epochs); "
        "fewer than ~900: the measurers may not leave their loss plateau",
    )
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.5, 0.7], help="SSA's h candidates")
    parser.add_argument("--msa_thresholds", type=float, nargs="+", default=[0.0, 0.5], help="MSA's h candidates")
    parser.add_argument("--h0", type=float, default=0.5, help="MSA's threshold when it picks a measurer")
    parser.add_argument("--ssa_search", choices=("grid", "bisect"), default="grid")
    parser.add_argument("--msa_search", choices=("grid", "bisect"), default="grid")
    parser.add_argument("--lr_scheduler", choices=("constant", "cosine"), default="constant")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--warmup_steps", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 images, 24 steps, batch 16, 1 seed")
    args = parser.parse_args(argv)
    if args.train_steps <= 0:
        parser.error("--train_steps must be positive")
    if args.quick:
        args.train_images, args.train_steps, args.batch_size, args.warmup_steps = 100, 24, 16, 2
        args.seeds, args.thresholds, args.msa_thresholds = args.seeds[:1], [0.0, 0.5], [0.0, 0.5]
    args.epochs = None  # bench_curriculum.training_arguments: the budget is --train_steps
    import torch

    from clipvg_hf.hardware import cpu_summary

    started = time.time()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    # one thread per training process: the tiny model is overhead-bound, and a second thread only fights the loader
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load = os.getloadavg()[0]
    work = args.work_dir or args.output.parent / "work"
    prepare_work_dir(work)
    args.output.parent.mkdir(parents=True, exist_ok=True)

    noise = {"missed": args.missed, "wrong_class": args.wrong_class, "jitter": args.jitter}
    print(f"data: {args.train_images} scenes (data seed {args.data_seed}), detector noise {noise}", flush=True)
    labels = build_data(work, args.train_images, noise, args.data_seed)
    from clipvg_hf.curriculum.common import source_rows

    by_source = source_rows(str(work / "noise"), CONFIG, "train_pseudo")
    rows_by_source = {s: by_source.get(s, []) for s in SOURCES}
    objects = json.loads((work / "raw" / "objects.json").read_text())
    correct = row_correctness(work / "noise", objects)
    for s, rows in rows_by_source.items():  # the per-row rule agrees with bench_pseudo_labels' precision
        if not rows or abs(np.mean([correct[r] for r in rows]) - labels["label_precision"]["noise"][s]) > 1e-9:
            raise RuntimeError(f"{s}: {len(rows)} rows, precision disagrees with bench_pseudo_labels")
    sources = {
        s: {"rows": len(rows), "precision": labels["label_precision"]["noise"][s]}
        for s, rows in rows_by_source.items()
    }
    print(
        "pseudo-labels: "
        + ", ".join(f"{s} {v['rows']} (precision {v['precision']:.3f})" for s, v in sources.items())
        + f"; without detector noise: {labels['label_precision']['no_noise']}",
        flush=True,
    )
    summary: dict[str, Any] = {
        "command": "python -m benchmarks.bench_unsupervised " + " ".join(argv if argv is not None else sys.argv[1:]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data_seed": args.data_seed,
        "noise": noise,
        "label_counts": labels["pseudo_counts"],
        "sources": sources,
        "label_precision": labels["label_precision"],
        "hardware": {**cpu_summary(), "training_threads": int(os.environ["OMP_NUM_THREADS"])},
        "load_average_before": load,
        "seeds": [],
    }
    results: list[dict[str, Any]] = []
    text = ""
    for seed in args.seeds:
        results.append(run_seed(seed, args, work, rows_by_source, correct))
        summary.update(seeds=results, **summarise(results))
        summary.update(load_average_after=os.getloadavg()[0], wall_seconds=round(time.time() - started, 1))
        args.output.write_text(json.dumps(summary, indent=1) + "\n")  # after every seed: a cut-short run reports
        text = table(results, summary)
    print("\n" + text + "\n" + choices(results))
    print(
        f"wall {summary['wall_seconds']:.0f} s; load average {load:.2f} -> {summary['load_average_after']:.2f}; "
        f"{summary['hardware']['cpu']} ({summary['hardware']['isa']}); JSON {args.output}"
    )
    return summary


if __name__ == "__main__":
    main()
