"""The offline demo: a small CLIP-VG learns to ground expressions on generated shapes, in minutes on a CPU.

    clipvg-demo --output_dir outputs/demo          # also python -m clipvg_hf.demo, what `make demo` runs

The command is :mod:`clipvg_hf.commands.demo`; :func:`run_demo` runs these steps:

1. generate a shapes pack in the official layout (:mod:`clipvg_hf.demo_shapes`) and convert it with the same
   converter as real packs into a dataset folder (config ``shapes-full``);
2. build a small CLIP-VG from scratch (``trainable_clip="all"``; no download) and train it with
   ``accelerate launch -m clipvg_hf.train``;
3. evaluate the best model on the validation and test splits, and compare with the best language-blind baseline
   on the same validation split (mean box, largest object, random object): the expression must be needed;
4. reload the model with ``AutoModel``, predict on held-out test images with the ``visual-grounding`` pipeline and
   draw predicted (red) against true (green) boxes, and plot the training curve.

With internet the same training command accepts ``--model_name_or_path openai/clip-vit-base-patch16`` and a Hub
dataset id.
"""

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from .boxes_clipvg import box_xyxy_to_cxcywh, grounding_iou
from .configuration_clipvg import CLIPVGConfig
from .data import convert_dataset, format_summary
from .demo_shapes import EXPRESSION_TYPES, SHAPES, ShapesSpec, write_shapes_pack
from .evaluation import evaluate_model
from .hardware import cpu_summary
from .modeling_clipvg import CLIPVGForGrounding
from .processing_clipvg import CLIPVGProcessor

__all__ = [
    "QK_INIT_GAIN",
    "TARGET_MARGIN",
    "build_demo_model",
    "demo_config",
    "language_blind_baselines",
    "per_type_accuracy",
    "run_demo",
    "sincos_position_table",
    "train_arguments",
    "train_command",
]

TARGET_MARGIN = 0.25  # the demo must beat the best language-blind baseline by this much Acc@0.5
QK_INIT_GAIN = 2.0  # the fusion's query / key projections start at this multiple of their xavier scale


def demo_config(image_size: int = 32, patch_size: int = 4) -> CLIPVGConfig:
    """A CLIP-VG of about 3.4M parameters (most of them the 49,408-token embedding) for small images.

    Patches of 4 px (an 8 x 8 grid on 32 px images) put several tokens on every object, so boxes can be read off
    the grid instead of out of a patch's pixels. Dropout is off: at this size it only slows learning down. The
    fusion has 8 heads of 8 dimensions: more independent attention patterns for the [REG] token to start from (see
    :func:`build_demo_model`).
    """
    width = 64
    return CLIPVGConfig(
        text_config=dict(
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
            projection_dim=width,
        ),
        vision_config=dict(
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=3,
            num_attention_heads=4,
            patch_size=patch_size,
            image_size=image_size,
            projection_dim=width,
        ),
        projection_dim=width,
        extract_layers=[0, 1, 2],
        fusion_hidden_size=width,
        fusion_num_layers=2,
        fusion_num_heads=8,
        fusion_intermediate_size=2 * width,
        fusion_dropout=0.0,
        max_text_length=16,
        image_size=image_size,
        trainable_clip="all",
    )


def sincos_position_table(grid: int, dim: int) -> torch.Tensor:
    """2-D sine/cosine positions for the CLS token (zeros) and a grid x grid of patches, shape (1 + grid², dim).

    A from-scratch ViT starts with tiny random position embeddings; starting from an explicit 2-D code lets the
    small demo model localise within its time budget (pretrained CLIP brings its own positions).
    """
    quarter = dim // 4
    freqs = torch.exp(-math.log(100.0) * torch.arange(quarter, dtype=torch.float32) / quarter) * math.pi
    ys, xs = torch.meshgrid(
        torch.arange(grid, dtype=torch.float32) / grid, torch.arange(grid, dtype=torch.float32) / grid, indexing="ij"
    )
    parts = [f(v.flatten()[:, None] * freqs) for v in (ys, xs) for f in (torch.sin, torch.cos)]
    table = torch.cat(parts, dim=1)
    return torch.cat([torch.zeros(1, dim), table], dim=0)


def build_demo_model(config: CLIPVGConfig, seed: int, init_noise: float = 0.0) -> CLIPVGForGrounding:
    """A randomly initialised demo model with 2-D sine/cosine patch positions; ``init_noise`` perturbs every
    weight by Gaussian noise of that standard deviation (drawn from its own generator).

    The fusion's position table starts small (std 0.02, as transformers initialise embeddings) instead of the
    official N(0, 1), which suits pretrained CLIP features of a large norm: on features of a from-scratch model the
    unit-variance positions would dominate every query and key and fix the [REG] token's attention at random.

    The fusion's query and key projections start at :data:`QK_INIT_GAIN` times their xavier scale. From scratch the
    [REG] token's attention is otherwise almost uniform (entropy 4.25 of at most 4.32 nats over 75 tokens; 3.0-4.1
    with the gain), so the gradient that would make it pick out the described object is second order: the loss sat
    on its mean-box plateau for anywhere between 3 and 17 epochs, depending on the seed and the CPU's rounding.
    Sharper initial attention in 8 heads leaves the plateau by epoch 3-4 for every seed, perturbed start and CPU
    kernel tried (``benchmarks/bench_demo_robustness.py``).
    """
    torch.manual_seed(seed)
    model = CLIPVGForGrounding(config)
    table = sincos_position_table(config.num_patches_per_side, config.vision_config.hidden_size)
    with torch.no_grad():
        model.clip.vision_model.embeddings.position_embedding.weight.copy_(table)
        model.fusion_position_embeddings.weight.normal_(0.0, 0.02)
        for layer in model.fusion.layers:
            layer.self_attn.q_proj.weight.mul_(QK_INIT_GAIN)
            layer.self_attn.k_proj.weight.mul_(QK_INIT_GAIN)
        if init_noise:
            generator = torch.Generator().manual_seed(seed + 1)
            for parameter in model.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * init_noise)
    return model


def language_blind_baselines(objects: dict, train_rows: list, eval_rows: list, size: int) -> dict[str, float]:
    """Acc@0.5 of predictors that ignore the expression, on ``eval_rows`` ((file, box, text) official rows).

    ``mean box``: the mean training box; ``largest object``: the largest object of the image; ``random object``:
    a uniformly random object of the image (its expected accuracy, computed exactly).
    """

    def normalised(boxes):
        return box_xyxy_to_cxcywh(torch.tensor(boxes, dtype=torch.float32) / size)

    targets = normalised([row[1] for row in eval_rows])
    mean_box = normalised([row[1] for row in train_rows]).mean(0, keepdim=True).expand_as(targets)
    largest = normalised([max(objects[r[0]]["boxes"], key=lambda b: (b[2] - b[0]) * (b[3] - b[1])) for r in eval_rows])
    random_hits = []
    for row, target in zip(eval_rows, targets):
        candidates = normalised(objects[row[0]]["boxes"])
        random_hits.append((grounding_iou(candidates, target.expand_as(candidates)) >= 0.5).float().mean())

    def accuracy(pred):
        return float((grounding_iou(pred, targets) >= 0.5).float().mean())

    return {
        "mean box": accuracy(mean_box),
        "largest object": accuracy(largest),
        "random object": float(torch.stack(random_hits).mean()),
    }


def predicted_ious(model_dir: Path, image_dir: Path, rows: list, size: int, batch_size: int = 256) -> torch.Tensor:
    """IoU of the saved model's box with the true box for each (file, box, text) row: the model and processor
    reloaded with the Auto classes, boxes post-processed to image pixels."""
    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    predicted = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        images = [Image.open(image_dir / file_name).convert("RGB") for file_name, _, _ in chunk]
        inputs = processor(images=images, text=[text for _, _, text in chunk], return_tensors="pt")
        with torch.no_grad():
            outputs = model(**inputs)
        sizes = [(image.height, image.width) for image in images]
        results = processor.post_process_grounded_object_detection(outputs, target_sizes=sizes)
        predicted += [result["boxes"][0] for result in results]
    targets = torch.tensor([row[1] for row in rows], dtype=torch.float32)
    return grounding_iou(box_xyxy_to_cxcywh(torch.stack(predicted) / size), box_xyxy_to_cxcywh(targets / size))


def shape_word_baseline(objects: dict, rows: list) -> float:
    """Expected Acc@0.5 of a predictor that reads only the first shape word of each expression (the target's shape)
    and picks one of the image's objects of that shape at random: what reading the shape but not the relation,
    comparison or order gets."""
    hits = []
    for file_name, box, text in rows:
        shape = next(word for word in text.split() if word in SHAPES)
        same = [b for b, s in zip(objects[file_name]["boxes"], objects[file_name]["shapes"]) if s == shape]
        hits.append(sum(list(b) == list(box) for b in same) / len(same))
    return float(sum(hits) / len(hits))


def per_type_accuracy(
    ious: torch.Tensor, rows: list, objects: dict, train_rows: list, size: int
) -> dict[str, dict[str, float | int]]:
    """Acc@0.5 per expression type next to the best language-blind and the shape-word baselines on the same rows."""
    types = [objects[file_name]["types"][objects[file_name]["expressions"].index(text)] for file_name, _, text in rows]
    table = {}
    for kind in EXPRESSION_TYPES + ("all",):
        picked = [i for i, t in enumerate(types) if kind in (t, "all")]
        if not picked:
            continue
        baselines = language_blind_baselines(objects, train_rows, [rows[i] for i in picked], size)
        table[kind] = {
            "expressions": len(picked),
            "accuracy": float((ious[picked] >= 0.5).float().mean()),
            "best_language_blind_baseline": max(baselines.values()),
            "shape_word_baseline": shape_word_baseline(objects, [rows[i] for i in picked]),
        }
    return table


def format_type_table(tables: dict[str, dict[str, dict[str, float | int]]]) -> str:
    """One line per expression type: count, Acc@0.5, the language-blind and the shape-word baselines per split."""
    splits = list(tables)
    lines = [
        f"{'expression type':<16}" + "".join(f"{split + ' (n, Acc@0.5, blind, shape word)':>46}" for split in splits)
    ]
    for kind in tables[splits[0]]:
        cells = []
        for split in splits:
            row = tables[split].get(kind)
            cells.append(
                f"{row['expressions']:>12} {row['accuracy']:>9.3f} {row['best_language_blind_baseline']:>10.3f}"
                f"{row['shape_word_baseline']:>12.3f}"
                if row
                else f"{'-':>46}"
            )
        lines.append(f"{kind:<16}" + "".join(cells))
    return "\n".join(lines)


def train_command(out: Path, args: argparse.Namespace) -> list[str]:
    """``accelerate launch -m clipvg_hf.train ...`` on one CPU process (the installed package's training module)."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        getattr(args, "mixed_precision", "no"),
        "--dynamo_backend",
        "no",
        "--cpu",
        "-m",
        "clipvg_hf.train",
        *train_arguments(out, args),
    ]


def train_arguments(out: Path, args: argparse.Namespace) -> list[str]:
    """The training module's arguments: ``out/init`` trained on ``out/data`` into ``out/run``, no augmentation."""
    return [
        "--model_name_or_path",
        str(out / "init"),
        "--dataset",
        str(out / "data"),
        "--dataset_config",
        "shapes-full",
        "--output_dir",
        str(out / "run"),
        "--num_epochs",
        str(args.epochs),
        "--per_device_batch_size",
        str(args.batch_size),
        "--eval_batch_size",
        "256",
        "--learning_rate",
        str(args.learning_rate),
        "--lr_scheduler",
        args.lr_scheduler,
        "--scheduler_step",
        "step",
        "--warmup_steps",
        str(args.warmup_steps),
        "--optim",
        "adamw_torch_fused",  # one kernel for all parameters instead of one per tensor: less overhead per step
        "--no_aug_crop",
        "--no_aug_scale",
        "--no_aug_color",
        "--no_aug_translate",
        "--group_by_image",
        "3",  # an image's expressions in one batch: each image is encoded once for all of them
        "--num_workers",
        "1",
        "--seed",
        str(args.seed),
        "--cpu",
        "--overwrite_output_dir",
    ]  # a rerun replaces


def draw_predictions(model_dir: Path, image_dir: Path, rows: list, path: Path, count: int) -> None:
    """Predicted (red) and true (green) boxes on held-out images, via the visual-grounding pipeline."""
    from PIL import Image, ImageDraw
    from transformers import pipeline

    grounder = pipeline("visual-grounding", model=str(model_dir))
    tiles = []
    for file_name, box, text in rows[:count]:
        image = Image.open(image_dir / file_name).convert("RGB")
        result = grounder(image, text=[text])[0]
        zoom = max(1, 192 // image.width)
        tile = image.resize((image.width * zoom, image.height * zoom), Image.NEAREST)
        draw = ImageDraw.Draw(tile)
        predicted = [result["box"][k] * zoom for k in ("xmin", "ymin", "xmax", "ymax")]
        draw.rectangle([v * zoom for v in box], outline=(0, 160, 0), width=2)
        draw.rectangle(predicted, outline=(230, 0, 0), width=2)
        canvas = Image.new("RGB", (tile.width, tile.height + 14), "white")
        canvas.paste(tile, (0, 14))
        ImageDraw.Draw(canvas).text((2, 1), text, fill="black")
        tiles.append(canvas)
    columns = 4
    rows_needed = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (columns * tiles[0].width, rows_needed * tiles[0].height), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * tile.width, (i // columns) * tile.height))
    sheet.save(path)


def plot_curve(log_path: Path, baseline: float, path: Path) -> bool:
    """Training loss and validation Acc@0.5 per epoch, with the best language-blind baseline; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    epochs = [r["epoch"] + 1 for r in records]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [r["train_loss"] for r in records], marker="o")
    loss_ax.set(xlabel="epoch", ylabel="training loss (L1 + GIoU)", title="training loss")
    acc_ax.plot(epochs, [r["validation_accuracy"] for r in records], marker="o", label="CLIP-VG (val)")
    acc_ax.axhline(baseline, color="grey", linestyle="--", label="best language-blind baseline")
    acc_ax.axhline(baseline + TARGET_MARGIN, color="green", linestyle=":", label="target")
    acc_ax.set(xlabel="epoch", ylabel="Acc@0.5", ylim=(0, 1), title="validation accuracy")
    acc_ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def run_demo(args: argparse.Namespace) -> dict:
    """The whole demo into ``args.output_dir`` (the steps of the module docstring); prints its progress and returns
    the summary written to ``summary.json`` (``reached``: the model beat the best language-blind baseline by
    :data:`TARGET_MARGIN`)."""
    started = time.time()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    # 1. data, through the same converter as the official packs
    spec = ShapesSpec(
        image_size=32, min_objects=3, max_objects=3, min_side=0.25, max_side=0.45, shared_shape=0.7, relational=0.3
    )
    raw = out / "raw"
    counts = write_shapes_pack(
        raw, {"train": args.train_images, "val": args.val_images, "test": args.test_images}, spec, seed=args.seed
    )
    reports, rejects = convert_dataset(raw / "splits", raw / "image_data", out / "data", "shapes", "full")
    print(format_summary(reports, rejects))

    # 2. a small model from scratch, trained with accelerate
    config = demo_config(spec.image_size)
    model = build_demo_model(config, args.seed, args.init_noise)
    model.save_pretrained(out / "init")
    CLIPVGProcessor.from_defaults(spec.image_size).save_pretrained(out / "init")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"training a {n_params / 1e6:.2f}M-parameter CLIP-VG from scratch on {counts['train']} expressions")
    command = train_command(out, args)
    print(" ".join(command[1:3] + command[command.index("--cpu") + 1 :]))
    subprocess.run(command, check=True)
    train_seconds = time.time() - started

    # 3. evaluation against the language-blind baselines
    results = evaluate_model(out / "run" / "best", str(out / "data"), "shapes-full", ["val", "test"])
    objects = json.loads((raw / "objects.json").read_text())
    train_rows = torch.load(raw / "splits" / "shapes" / "shapes_train.pth")
    val_rows = torch.load(raw / "splits" / "shapes" / "shapes_val.pth")
    test_rows = torch.load(raw / "splits" / "shapes" / "shapes_test.pth")
    baselines = language_blind_baselines(objects, train_rows, val_rows, spec.image_size)
    best_baseline = max(baselines.values())
    val_accuracy = results["splits"]["val"]["accuracy"]
    image_dir = raw / "image_data" / "shapes" / "images"
    type_tables = {
        split: per_type_accuracy(
            predicted_ious(out / "run" / "best", image_dir, rows, spec.image_size),
            rows,
            objects,
            train_rows,
            spec.image_size,
        )
        for split, rows in (("val", val_rows), ("test", test_rows))
    }

    # 4. reload, predict, draw
    draw_predictions(out / "run" / "best", image_dir, test_rows, out / "predictions.png", count=16)
    plotted = plot_curve(out / "run" / "log.jsonl", best_baseline, out / "training_curve.png")

    peak_mb = (
        max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        / 1024
    )
    summary = {
        "validation_accuracy": val_accuracy,
        "test_accuracy": results["splits"]["test"]["accuracy"],
        "language_blind_baselines": baselines,
        "per_expression_type": type_tables,
        "best_language_blind_baseline": best_baseline,
        "margin": val_accuracy - best_baseline,
        "target_margin": TARGET_MARGIN,
        "reached": val_accuracy - best_baseline >= TARGET_MARGIN,
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.time() - started, 1),
        "peak_memory_mb": round(peak_mb),
        "parameters": n_params,
        "seed": args.seed,
        "init_noise": args.init_noise,
        "mixed_precision": getattr(args, "mixed_precision", "no"),
        "machine": cpu_summary(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"\nvalidation Acc@0.5: CLIP-VG {val_accuracy:.3f} vs best language-blind baseline {best_baseline:.3f} "
        f"({', '.join(f'{k} {v:.3f}' for k, v in baselines.items())}); test Acc@0.5 "
        f"{summary['test_accuracy']:.3f}"
    )
    print(format_type_table(type_tables))
    machine = summary["machine"]
    print(f"machine: {machine['cpu']}, ISA {machine['isa']}, {machine['threads']} threads")
    print(
        f"margin {summary['margin']:+.3f} (target +{TARGET_MARGIN}): {'reached' if summary['reached'] else 'NOT reached'}"
        f"; {summary['wall_seconds']:.0f} s wall, peak memory {summary['peak_memory_mb']} MB"
    )
    print(f"pictures: {out / 'predictions.png'}" + (f", {out / 'training_curve.png'}" if plotted else ""))
    return summary
