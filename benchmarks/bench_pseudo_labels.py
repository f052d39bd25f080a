"""Throughput and memory of the pseudo-label generator (clipvg_hf.pseudo_labels). Not a test.

    nice python -m benchmarks.bench_pseudo_labels                   # engines, 100k-image memory run, model stages
    python -m benchmarks.bench_pseudo_labels --quick                # small sizes (seconds)
    python -m benchmarks.bench_pseudo_labels --skip_models          # engines and memory only
    python -m benchmarks.bench_pseudo_labels --accuracy_only        # the training experiment (4.) alone
    python -m benchmarks.bench_pseudo_labels --models_only          # the model stages (3.) alone

1. Engines on one core (``torch``/BLAS threads = 1; the engines are pure Python): template candidates + sampling and
   geometric relations per image, given detections. The detections are generated: 4-12 per image, Visual Genome
   classes with people, clothes and things in the official proportions of the parity fixture (a person with worn
   clothes in most images), random float32 scores, attributes on half of the boxes.
2. Memory in the collection size: the same generated detections written as intermediate shards of 1000 images
   (10k and 100k images), then the whole labels stage (templates + relations, labels files, the output dataset with
   its image bytes through the converter's writer) in a fresh process per size; peak RSS is reported for both.
3. Model stages at their real sizes with random weights, built from their configs (nothing is downloaded):
   DETR-R50 (object-detection), OWLv2-B/16 (zero-shot-object-detection over the 80 COCO classes, all in one forward
   pass per image), CLIP ViT-B/32 on box crops (400 attributes), BLIP-base captioning (greedy, 20 new tokens).
   Images 640x480.
4. Labels good enough to train on? The demo's generated shapes (32 px): an *oracle detector* (the generator's
   objects, colour as the attribute with score 0.9) with injected noise at set rates (objects missed, wrong shape
   class, jittered boxes: each side moved by up to a quarter of the box size); template labels (official rules, the
   50 px spatial spread scaled to the image: 2.5 px) and geometric relation labels from those detections. Label
   precision per source (box IoU >= 0.5 with an object of the colour and shape the text names), without and with
   noise; then (unless ``--no_training``) the demo model trained with the same step budget on (a) the scenes' true
   expressions, (b) the template labels, (c) template + relation labels; Acc@0.5 on held-out test scenes with their
   true expressions ("the red circle").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from clipvg_hf.pseudo_labels.detections import DetectedImage, ImageRecord, write_detection_shard
from clipvg_hf.pseudo_labels.relations import GeometricRelations, relation_targets
from clipvg_hf.pseudo_labels.templates import Detection, TemplateEngine
from clipvg_hf.pseudo_labels.vocab import ClassGroups, attribute_vocabulary, coco_classes, visual_genome_classes

SHARD = 1000


def synthetic_images(count: int, seed: int = 0, width: int = 640, height: int = 480) -> list[DetectedImage]:
    """Generated detections (see the module docstring), one image record pointing at ``path`` for all."""
    rng = random.Random(seed)
    groups = ClassGroups.official()
    people, clothes = sorted(groups.people), sorted(groups.clothes)
    things = [c for c in visual_genome_classes() if c not in groups.people and c not in groups.clothes]
    words = attribute_vocabulary()
    out = []
    for index in range(count):
        dets = []
        for _ in range(rng.randint(4, 12)):
            kind = rng.random()
            label = rng.choice(people if kind < 0.3 else clothes if kind < 0.5 else things)
            w, h = rng.uniform(40, 320), rng.uniform(40, 300)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            score = float(np.float32(rng.uniform(0.2, 1.0)))
            attr = rng.choice(words) if rng.random() < 0.5 else None
            dets.append(
                Detection(
                    label,
                    (round(x, 2), round(y, 2), round(x + w, 2), round(y + h, 2)),
                    score,
                    attr,
                    float(np.float32(rng.uniform(0.1, 0.9))) if attr else 0.0,
                )
            )
        out.append(DetectedImage(ImageRecord(index, f"{index:08d}.png", None), width, height, dets, None))
    return out


def engines(count: int) -> dict[str, float]:
    images = synthetic_images(count)
    views = [im.for_templates() for im in images]
    engine, relations = TemplateEngine(), GeometricRelations()
    rng = random.Random(20211024)
    started = time.process_time()
    rows = sum(len(engine.sample(engine.candidates(v), rng)) for v in views)
    template_s = time.process_time() - started
    started = time.process_time()
    triplets = sum(
        len(relations(None, im.width, im.height, relation_targets(engine, im.detections, im.width, im.height)))
        for im in images
    )
    relation_s = time.process_time() - started
    return {
        "images": count,
        "template_images_per_s": count / template_s,
        "template_rows": rows,
        "relation_images_per_s": count / relation_s,
        "relation_rows": triplets,
    }


def write_shards(folder: Path, count: int, image: Path) -> list[Path]:
    """``count`` generated images as intermediate shards of 1000, every record pointing at ``image``."""
    paths = []
    for start in range(0, count, SHARD):
        items = synthetic_images(min(SHARD, count - start), seed=start)
        for k, item in enumerate(items):
            item.record = ImageRecord(start + k, f"{start + k:08d}.png", str(image))
        path = folder / "detections" / f"shard-{start // SHARD:05d}.parquet"
        write_detection_shard(path, items, [], {"generated": True})
        paths.append(path)
    return paths


def memory_child(count: int, folder: Path) -> dict[str, float]:
    """(In a fresh process) write ``count`` images of detections, then run and time the labels stage."""
    from PIL import Image

    from clipvg_hf.pseudo_labels.writer import Labeler, write_dataset

    image = folder / "tiny.png"
    Image.new("RGB", (640, 480), (90, 120, 150)).save(image)
    shards = write_shards(folder, count, image)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    labeler = Labeler(TemplateEngine(), GeometricRelations())
    counts = write_dataset(folder, "bench", shards, labeler, 20211024, {"models": {}})
    seconds = time.perf_counter() - started
    return {
        "images": count,
        "peak_rss_mb_after_writing_shards": before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "labels_stage_s": seconds,
        "labels_stage_images_per_s": count / seconds,
        "expressions": counts.expressions,
    }


def memory(sizes: list[int]) -> list[dict[str, float]]:
    results = []
    for count in sizes:
        with tempfile.TemporaryDirectory() as folder:
            done = subprocess.run(
                [sys.executable, __file__, "--_memory_child", str(count), folder],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


# -- model stages -----------------------------------------------------------------------------------------------
def _photo(seed: int, width: int = 640, height: int = 480):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _timed(call, repeats: int) -> float:
    call()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - started) / repeats


def models(images: int, device: str) -> list[dict[str, object]]:
    import torch
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        DetrConfig,
        DetrForObjectDetection,
        DetrImageProcessor,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        ResNetConfig,
        pipeline,
    )

    from clipvg_hf.processing_clipvg import build_clip_tokenizer
    from clipvg_hf.pseudo_labels.attributes import AttributeClassifier
    from clipvg_hf.pseudo_labels.captions import Captioner
    from clipvg_hf.pseudo_labels.detections import Detector

    torch.manual_seed(0)
    photos = [_photo(i) for i in range(images)]
    clip_tok = build_clip_tokenizer()
    rows: list[dict[str, object]] = []

    def record(stage, model, seconds, per, note=""):
        rows.append(
            {
                "stage": stage,
                "model": model,
                "seconds_per_image": seconds / per,
                "images_per_s": per / seconds,
                "note": note,
            }
        )
        print(f"{stage}: {model}: {per / seconds:.3f} images/s {note}", file=sys.stderr, flush=True)

    with torch.inference_mode():
        detr = (
            DetrForObjectDetection(
                DetrConfig(use_timm_backbone=False, backbone_config=ResNetConfig(out_features=["stage4"]))
            )
            .eval()
            .to(device)
        )
        pipe = pipeline("object-detection", model=detr, image_processor=DetrImageProcessor(), device=device)
        detector = Detector(pipe, "object-detection", threshold=0.0, batch_size=len(photos))
        record("detection", "DETR-R50 (random)", _timed(lambda: detector(photos), 1), len(photos))

        owl = Owlv2ForObjectDetection(Owlv2Config(vision_config={"image_size": 960})).eval().to(device)
        pipe = pipeline(
            "zero-shot-object-detection",
            model=owl,
            tokenizer=clip_tok,
            image_processor=Owlv2ImageProcessor(),
            device=device,
        )
        vocab = list(coco_classes())
        detector = Detector(pipe, "zero-shot-object-detection", threshold=0.1, vocabulary=vocab, batch_size=2)
        record(
            "detection",
            "OWLv2-B/16 (random), 80 COCO classes",
            _timed(lambda: detector(photos[:2]), 1),
            2,
            "one forward pass per image for the whole vocabulary",
        )

        clip = CLIPModel(CLIPConfig(vision_config={"patch_size": 32})).eval().to(device)
        pipe = pipeline(
            "zero-shot-image-classification",
            model=clip,
            tokenizer=clip_tok,
            image_processor=CLIPImageProcessor(),
            device=device,
        )
        classifier = AttributeClassifier(pipe, batch_size=32)
        boxes = [
            [Detection("thing", (float(x), 40.0, float(x) + 200, 400.0), 0.9) for x in range(0, 400, 50)]
            for _ in photos
        ]
        seconds = _timed(lambda: classifier(photos, boxes), 1)
        record("attributes", "CLIP ViT-B/32 (random), 400 attributes", seconds, len(photos), "8 boxes per image")

        vocab = {f"[unused{i}]": i for i in range(30524)}
        for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]):
            vocab.pop(f"[unused{i}]")
            vocab[token] = i
        tok = BertTokenizerFast(vocab=vocab)
        blip = BlipForConditionalGeneration(BlipConfig()).eval().to(device)
        blip.generation_config.min_new_tokens = 20
        pipe = pipeline(
            "image-text-to-text",
            model=blip,
            device=device,
            processor=BlipProcessor(image_processor=BlipImageProcessorPil(), tokenizer=tok),
        )
        captioner = Captioner(pipe, max_new_tokens=20, batch_size=len(photos))
        record("captions", "BLIP-base (random), 20 tokens", _timed(lambda: captioner(photos), 1), len(photos))
    return rows


# -- training on the labels -------------------------------------------------------------------------------------
def noisy_detections(
    objects: dict, files: list[str], noise: dict[str, float], size: int, seed: int, image_dir: Path
) -> list[DetectedImage]:
    """The oracle detector's output with missed objects, wrong shape classes and jittered boxes."""
    from clipvg_hf.demo_shapes import SHAPES

    rng = random.Random(seed)
    items = []
    for index, name in enumerate(files):
        scene, dets = objects[name], []
        for box, colour, shape in zip(scene["boxes"], scene["colors"], scene["shapes"]):
            if rng.random() < noise["missed"]:
                continue
            if rng.random() < noise["wrong_class"]:
                shape = rng.choice([s for s in SHAPES if s != shape])
            x1, y1, x2, y2 = (float(v) for v in box)
            if rng.random() < noise["jitter"]:
                w, h = x2 - x1, y2 - y1
                x1, x2 = x1 + rng.uniform(-w, w) / 4, x2 + rng.uniform(-w, w) / 4
                y1, y2 = y1 + rng.uniform(-h, h) / 4, y2 + rng.uniform(-h, h) / 4
            x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(size)), min(y2, float(size))
            if x2 > x1 and y2 > y1:
                dets.append(Detection(shape, (x1, y1, x2, y2), rng.uniform(0.5, 1.0), colour, 0.9))
        items.append(DetectedImage(ImageRecord(index, name, str(image_dir / name)), size, size, dets, None))
    return items


def label_hits(folder: Path, objects: dict) -> list[tuple[int, str, bool]]:
    """(row_index, source, right) for every pseudo-label: right when its box has IoU >= 0.5 with a true object that
    the text names (colour and shape for templates; the subject's shape for relations)."""
    import pyarrow.parquet as pq

    from clipvg_hf.demo_shapes import COLORS, SHAPES

    hits = []
    for path in sorted((folder / "shapes-unsup-multi").glob("train_pseudo-*.parquet")):
        for image in pq.read_table(path, columns=["file_name", "expressions"]).to_pylist():
            scene = objects[image["file_name"]]
            for e in image["expressions"]:
                words = e["expression"].split()
                shape = next((w for w in words if w in SHAPES), None)
                colour = next((w for w in words if w in COLORS), None)
                ok = any(
                    _iou(e["bbox"], box) >= 0.5 and s == shape and (colour is None or c == colour)
                    for box, c, s in zip(scene["boxes"], scene["colors"], scene["shapes"])
                )
                hits.append((int(e["row_index"]), e["source"], ok))
    return hits


def label_precision(folder: Path, objects: dict) -> dict[str, float]:
    """Per source: the fraction of right labels (:func:`label_hits`)."""
    by_source: dict[str, list[bool]] = {}
    for _, source, ok in label_hits(folder, objects):
        by_source.setdefault(source, []).append(ok)
    return {source: sum(v) / len(v) for source, v in by_source.items()}


def _iou(a, b) -> float:
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def accuracy(
    out: Path, train_images: int, epochs: int, noise: dict[str, float], seed: int = 13, train: bool = True
) -> dict:
    import shutil
    from types import SimpleNamespace

    from clipvg_hf.data import convert_dataset
    from clipvg_hf.demo_run import build_demo_model, demo_config, train_command
    from clipvg_hf.demo_shapes import ShapesSpec, write_shapes_pack
    from clipvg_hf.evaluation import evaluate_model
    from clipvg_hf.processing_clipvg import CLIPVGProcessor
    from clipvg_hf.pseudo_labels.templates import TemplateConfig
    from clipvg_hf.pseudo_labels.writer import Labeler, write_card, write_dataset

    spec = ShapesSpec(image_size=32, min_side=0.25, max_side=0.45)
    raw = out / "raw"
    counts = write_shapes_pack(raw, {"train": train_images, "val": 200, "test": 200}, spec, seed=seed)
    convert_dataset(raw / "splits", raw / "image_data", out / "data", "shapes", "full")
    objects = json.loads((raw / "objects.json").read_text())
    files = sorted(f for f in objects if f.startswith("train_"))
    image_dir = raw / "image_data" / "shapes" / "images"
    precision, label_counts = {}, {}
    for name, rates in (("no_noise", dict.fromkeys(noise, 0.0)), ("noise", noise)):
        items = noisy_detections(objects, files, rates, spec.image_size, seed, image_dir)
        shards = []
        for start in range(0, len(items), SHARD):
            path = out / name / "detections" / f"shard-{start // SHARD:05d}.parquet"
            write_detection_shard(path, items[start : start + SHARD], [], {"oracle": True, "noise": rates})
            shards.append(path)
        engine = TemplateEngine(TemplateConfig(spatial_spread=50.0 * spec.image_size / 640))
        label_counts[name] = write_dataset(
            out / name,
            "shapes",
            shards,
            Labeler(engine, GeometricRelations()),
            20211024,
            {"models": {}, "settings": {"oracle_noise": rates}},
        ).as_dict()
        precision[name] = label_precision(out / name, objects)
    if not train:
        return {
            "train_images": train_images,
            "noise": noise,
            "label_precision": precision,
            "pseudo_counts": label_counts["noise"],
        }
    manifest = json.loads((out / "noise" / "pseudo_labels.json").read_text())
    for config in manifest["configs"]:  # the clean val / test splits of the scenes, for validation and testing
        for split in ("val", "test"):
            for path in (out / "data" / "shapes-full").glob(f"{split}-*.parquet"):
                shutil.copy(path, out / "noise" / config / path.name)
    write_card(out / "noise", manifest)
    config = demo_config(spec.image_size)
    build_demo_model(config, seed).save_pretrained(out / "init")
    CLIPVGProcessor.from_defaults(spec.image_size).save_pretrained(out / "init")
    steps = epochs * max(1, counts["train"] // 64)  # the same optimizer steps for every training set
    runs = {
        "true expressions": (out / "data", "shapes-full"),
        "template labels": (out / "noise", "shapes-unsup-single"),
        "template + relation labels": (out / "noise", "shapes-unsup-multi"),
    }
    results = {}
    for name, (data, config_name) in runs.items():
        run = out / name.replace(" ", "_").replace("+", "and")
        command = train_command(
            out,
            SimpleNamespace(
                epochs=epochs,
                batch_size=64,
                learning_rate=5e-4,
                warmup_steps=50,
                lr_scheduler="constant",  # the demo's schedule
                seed=seed,
            ),
        )
        command[command.index("--dataset") + 1] = str(data)
        command[command.index("--dataset_config") + 1] = config_name
        command[command.index("--output_dir") + 1] = str(run)
        started = time.time()
        subprocess.run([*command, "--train_steps", str(steps)], check=True, capture_output=True)
        test = evaluate_model(run / "best", str(data), config_name, ["test"])["splits"]["test"]["accuracy"]
        results[name] = {"test_accuracy": test, "train_seconds": time.time() - started}
    return {
        "train_images": train_images,
        "true_expressions": counts["train"],
        "noise": noise,
        "steps": steps,
        "pseudo_counts": label_counts["noise"],
        "runs": results,
        "label_precision": precision,
    }


def table(result: dict) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [f"pseudo-label benchmark: {cpu}, {os.cpu_count()} CPUs, python {platform.python_version()}"]
    e = result.get("engines")
    if e:
        lines += [
            "",
            f"Engines, one core, {e['images']} generated images (4-12 detections each):",
            f"  templates  {e['template_images_per_s']:9.0f} images/s  ({e['template_rows']} rows)",
            f"  relations  {e['relation_images_per_s']:9.0f} images/s  ({e['relation_rows']} triplets)",
        ]
    if result.get("memory"):
        lines += [
            "",
            "Labels stage from intermediate shards (templates + relations + output dataset), fresh process:",
            f"  {'images':>8}  {'peak RSS MB':>11}  {'images/s':>9}  {'expressions':>11}",
        ]
        for m in result["memory"]:
            total = sum(m["expressions"].values())
            lines.append(
                f"  {m['images']:>8}  {m['peak_rss_mb']:>11.0f}  {m['labels_stage_images_per_s']:>9.0f}  {total:>11}"
            )
    if result.get("accuracy"):
        a = result["accuracy"]
        n = a["noise"]
        lines += [
            "",
            f"Label precision on {a['train_images']} shapes scenes, oracle detector without noise and with "
            f"{n['missed']:.0%} missed / {n['wrong_class']:.0%} wrong class / {n['jitter']:.0%} jittered boxes "
            "(label box IoU >= 0.5 with an object its text names):",
        ]
        for name, p in a["label_precision"].items():
            lines.append(f"  {name:<9} " + "  ".join(f"{s} {v:.3f}" for s, v in p.items()))
        c = a["pseudo_counts"]["expressions"]
        lines.append(f"  labels with noise: template {c['template']}, relation {c['relation']}")
    if result.get("accuracy", {}).get("runs"):
        lines += [
            "",
            f"Training on the noisy labels, {a['steps']} steps each ({a['true_expressions']} true expressions):",
        ]
        for name, r in a["runs"].items():
            lines.append(f"  {name:<28} test Acc@0.5 {r['test_accuracy']:.3f}  ({r['train_seconds']:.0f} s)")
    if result.get("models"):
        lines += ["", f"Model stages ({result['device']}, random weights, real sizes, 640x480 images):"]
        for r in result["models"]:
            lines.append(f"  {r['stage']:<10} {r['model']:<40} {r['images_per_s']:8.3f} images/s  {r['note']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip_models", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    parser.add_argument("--accuracy_only", action="store_true")
    parser.add_argument("--models_only", action="store_true")
    parser.add_argument("--no_training", action="store_true", help="4. without the trainings: label precision only")
    parser.add_argument("--skip_accuracy", action="store_true")
    parser.add_argument("--train_images", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--work_dir", default="outputs/bench_pseudo_labels")
    parser.add_argument("--_memory_child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._memory_child:
        print(json.dumps(memory_child(int(args._memory_child[0]), Path(args._memory_child[1]))))
        return {}
    import torch

    result: dict = {"device": args.device}
    if not args.accuracy_only and not args.models_only:
        torch.set_num_threads(1)
        result["engines"] = engines(2000 if args.quick else 20000)
        result["memory"] = memory([1000, 5000] if args.quick else [10000, 100000])
    if not args.skip_accuracy and not args.models_only:
        noise = {"missed": 0.1, "wrong_class": 0.1, "jitter": 0.2}
        work = Path(args.work_dir)
        shutil.rmtree(work, ignore_errors=True)
        result["accuracy"] = accuracy(
            work,
            200 if args.quick else args.train_images,
            2 if args.quick else args.epochs,
            noise,
            train=not args.no_training,
        )
    if not args.skip_models and not args.accuracy_only:
        torch.set_num_threads(os.cpu_count() or 1)
        result["models"] = models(2 if args.quick else 4, args.device)
    print(table(result))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
