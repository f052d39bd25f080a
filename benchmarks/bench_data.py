#!/usr/bin/env python
"""Data-pipeline throughput (samples/s, decode + augment + batch): an official-style loader vs ``clipvg_hf.data``.

- *official-style*: the ``.pth`` list in memory; each sample opens its image file from disk with PIL and converts it
  to RGB, truncates the box to int, runs the official augmentation written the official way (PIL steps, then
  ``ToTensor``/``Normalize``-style torch ops and a zero canvas per sample) and tokenizes to a fixed 77 tokens;
  PyTorch's default collate.
- *ours*: the converted parquet split (images embedded), :class:`GroundingDataset` + :class:`CLIPVGTrainTransform`
  (normalisation by table look-up in NumPy, no redundant RGB copies) + :class:`CLIPVGCollator` (batched tokenizer,
  dynamic padding). **Same pixels** as the official-style path for the same random stream (checked at start-up).
- *ours + fast decode/resize* (opt-in, **changes pixels**): ``CLIPVGTrainTransform(draft_decode=True,
  fused_crop_resize=True)`` decodes JPEGs at a reduced DCT scale when the resize branch shrinks them and does the
  crop branch's upscale-crop-downscale as one resize of the source window. Same random draws, sizes and boxes.
- *grouped by image* (opt-in, **changes which expressions share a batch**, not their pixels): the same datasets read
  in :class:`ImageGroupedSampler` order (every expression once per epoch, in runs of up to ``--max_per_image``
  expressions of one image), so ``GroundingDataset.__getitems__`` reads and decodes each run's image once. The table
  gives the achieved expressions per image decode; the fixture has 2.4 expressions per JPEG image, RefCOCO about 7.
- *eval*: both loaders read the split in file order, as evaluation does; ours reads and letterboxes each image once
  per run of its adjacent rows (``CLIPVGEvalTransform.transform_run``), the official-style loader once per row.

The paths run interleaved ``--repeats`` times per setting; the table gives medians and the median of per-repetition
ratios. Torch uses ``--threads`` (default 1, as in DataLoader workers) so that tiny per-sample tensor ops do not
fight over a loaded machine's cores. Runs on the parity fixture by default (13 images, 20 expressions; training
orders draw with replacement); point ``--split_root/--image_root`` at a real pack for real numbers. Not a test.

    python -m benchmarks.bench_data                  # about a minute
    python -m benchmarks.bench_data --jpeg_only      # only the COCO photos (RefCOCO-like)
    python -m benchmarks.bench_data --jpeg_only --expressions_per_image 7   # RefCOCO's expressions per image
    python -m benchmarks.bench_data --quick          # seconds (CI smoke)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from datasets import load_dataset

from clipvg_hf.data import (
    DATASETS,
    CLIPVGCollator,
    CLIPVGEvalTransform,
    CLIPVGTrainTransform,
    GroundingDataset,
    ImageGroupedSampler,
    config_name,
    convert_dataset,
    image_ids,
    load_split_file,
    sample_rng,
)
from clipvg_hf.data.splits import official_box
from clipvg_hf.data.transforms import (
    color_jitter,
    has_spatial_word,
    random_size_crop,
    resize_long_side,
    resize_short_side,
)
from clipvg_hf.image_processing_clipvg import IMAGENET_MEAN, IMAGENET_STD
from clipvg_hf.processing_clipvg import build_clip_tokenizer, clean_text

REPO = Path(__file__).resolve().parents[1]
FAST_TRAIN = CLIPVGTrainTransform(draft_decode=True, fused_crop_resize=True)
TINY = REPO / "tests" / "fixtures" / "parity" / "tiny"


def official_normalize_and_pad(
    image: PIL.Image.Image, box: torch.Tensor, size: int, rng: np.random.Generator | None
) -> dict[str, Any]:
    """ToTensor, Normalize and a random-offset zero canvas, per sample with torch ops (the official data flow)."""
    pixels = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8, copy=True)).permute(2, 0, 1)
    pixels = pixels.float().div(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    pixels = pixels.sub(mean).div(std)
    free_h, free_w = size - image.height, size - image.width
    if rng is None:
        top, left = round(free_h / 2.0 - 0.1), round(free_w / 2.0 - 0.1)
    else:
        top, left = int(rng.integers(0, free_h, endpoint=True)), int(rng.integers(0, free_w, endpoint=True))
    canvas = torch.zeros(3, size, size, dtype=torch.float32)
    mask = torch.zeros(size, size, dtype=torch.long)
    canvas[:, top : top + image.height, left : left + image.width] = pixels
    mask[top : top + image.height, left : left + image.width] = 1
    shifted = box + torch.tensor([left, top, left, top], dtype=box.dtype)
    cxcywh = torch.stack(
        [
            (shifted[0] + shifted[2]) / 2,
            (shifted[1] + shifted[3]) / 2,
            shifted[2] - shifted[0],
            shifted[3] - shifted[1],
        ]
    )
    return {"pixel_values": canvas, "pixel_mask": mask, "labels": cxcywh / size}


class OfficialStyleTrainTransform(CLIPVGTrainTransform):
    """The official augmentation step by step, each step on a fresh RGB copy as the official code does."""

    def __call__(self, image: PIL.Image.Image, box: Any, text: str, rng: np.random.Generator) -> dict[str, Any]:
        box = torch.as_tensor(box, dtype=torch.float32).clone()
        image = image.convert("RGB")
        if not has_spatial_word(text) and rng.random() < self.crop_prob:
            image, box = resize_short_side(image, box, int(rng.choice(self.crop_short_sides)))
            image, box, _ = random_size_crop(image, box, rng, self.crop_min, self.crop_max)
        image, box = resize_long_side(image, box, int(rng.choice(self.scales)))
        if self.aug_color:
            image, _ = color_jitter(image, rng)
        return official_normalize_and_pad(image, box, self.size, rng if self.aug_translate else None)


class OfficialStyleDataset(torch.utils.data.Dataset):
    """Per-sample file I/O and fixed-length tokenization, the way the official ``TransVGDataset`` works."""

    def __init__(self, split_file: Path, image_dir: Path, dataset: str, transform: Any, tokenizer: Any):
        self.rows = load_split_file(split_file)
        self.info = DATASETS[dataset]
        self.image_dir, self.transform, self.tokenizer = image_dir, transform, tokenizer

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        image_file, box, text = (row[0], row[1], row[2]) if self.info.num_fields == 3 else (row[0], row[2], row[3])
        image = PIL.Image.open(self.image_dir / image_file).convert("RGB")
        text = text.lower()
        out = self.transform(image, list(official_box(box, self.info.box_format)), text, sample_rng(None, 0, index))
        ids = self.tokenizer(clean_text(text), padding="max_length", max_length=77, return_tensors="pt")
        return {
            "pixel_values": out["pixel_values"],
            "pixel_mask": out["pixel_mask"],
            "labels": out["labels"],
            "input_ids": ids["input_ids"][0],
            "attention_mask": ids["attention_mask"][0],
        }


def check_same_pixels(official: OfficialStyleDataset, ours: GroundingDataset, count: int = 12) -> int:
    """Compare both paths sample by sample under one seed; returns how many samples were identical.

    Both datasets list the split in file order, so index i is the same expression, and with ``seed=None`` both
    draw their random stream from torch's generator.
    """
    identical = 0
    for index in range(min(count, len(ours))):
        torch.manual_seed(index)
        a = official[index]
        torch.manual_seed(index)
        b = ours[index]
        same = all(
            torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in ("pixel_values", "pixel_mask", "labels")
        )
        identical += same
    return identical


def with_expressions_per_image(split_root: Path, dataset: str, split: str, count: int, out: Path) -> Path:
    """A copy of ``split_root`` whose ``split`` gives every JPEG image ``count`` expressions (its own, cycled).

    The fixture has 2.4 expressions per JPEG image, RefCOCO about 7; the grouped paths decode once per run, so
    their gain depends on it. Returns the new split root.
    """
    info = DATASETS[dataset]
    shutil.copytree(split_root, out)
    path = out / info.key / f"{info.key}_{split}.pth"
    by_image: dict[str, list[Any]] = {}
    for row in load_split_file(path):
        if str(row[0]).lower().endswith((".jpg", ".jpeg")):
            by_image.setdefault(row[0], []).append(row)
    rows = [own[i % len(own)] for own in by_image.values() for i in range(count)]
    torch.save(rows, path)
    return out


def random_order(dataset: torch.utils.data.Dataset, count: int) -> list[int]:
    """``count`` positions drawn with replacement, never two of one image in a row (the same for every path).

    On a real split (RefCOCO: 17k training images) neighbours almost never share an image; on the 5-image fixture
    they would, and the batched reads would decode them once: redrawing keeps the fixture honest.
    """
    generator = torch.Generator().manual_seed(0)
    images = image_ids(dataset)
    order = [int(torch.randint(len(dataset), (1,), generator=generator))]
    while len(order) < count:
        candidate = int(torch.randint(len(dataset), (1,), generator=generator))
        if images[candidate] != images[order[-1]]:
            order.append(candidate)
    return order


def grouped_order(dataset: torch.utils.data.Dataset, count: int, max_per_image: int) -> list[int]:
    """``count`` positions from consecutive epochs of :class:`ImageGroupedSampler`."""
    sampler = ImageGroupedSampler(image_ids(dataset), max_per_image=max_per_image, seed=0)
    order: list[int] = []
    while len(order) < count:
        order += sampler.indices(epoch=len(order) // len(sampler))
    return order[:count]


def expressions_per_decode(dataset: torch.utils.data.Dataset, order: list[int], batch_size: int) -> float:
    """Samples over image decodes when each batch decodes once per run of consecutive same-image positions."""
    images = image_ids(dataset)[order]
    runs = sum(
        1 + int(np.count_nonzero(chunk[1:] != chunk[:-1]))
        for chunk in (images[i : i + batch_size] for i in range(0, len(images), batch_size))
    )
    return len(order) / runs


def loader_pass(
    dataset: torch.utils.data.Dataset, collate: Any, order: list[int], workers: int, batch_size: int
) -> float:
    """Seconds for the positions of ``order`` after the first batch (warm-up: worker start, first decode)."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=order, num_workers=workers, collate_fn=collate
    )
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    for _ in iterator:
        pass
    seconds = time.perf_counter() - start
    del iterator, loader
    gc.collect()  # no finished loader left for the next pass's forked workers to inherit and try to shut down
    return seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split_root", type=Path, default=TINY / "splits")
    parser.add_argument("--image_root", type=Path, default=TINY / "image_data")
    parser.add_argument("--dataset", default="unc")
    parser.add_argument("--split", default="train_pseudo")
    parser.add_argument("--setting", default="unsup-single")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--expressions_per_image",
        type=int,
        default=None,
        help="give every JPEG image of the split this many expressions (its own, cycled)",
    )
    parser.add_argument(
        "--max_per_image", type=int, default=8, help="longest run of one image's expressions in the grouped paths"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    parser.add_argument(
        "--jpeg_only",
        action="store_true",
        help="sample only expressions whose image is a JPEG (as every RefCOCO image is)",
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds: 64 samples, no workers, 1 repeat")
    parser.add_argument("--json", type=Path, default=Path("outputs/bench_data.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.workers, args.repeats, args.batch_size = 64, [0], 1, 16

    torch.set_num_threads(args.threads)
    tokenizer = build_clip_tokenizer()
    info = DATASETS[args.dataset]
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.expressions_per_image is not None:
            args.split_root = with_expressions_per_image(
                args.split_root, args.dataset, args.split, args.expressions_per_image, Path(tmp) / "splits"
            )
        start = time.perf_counter()
        convert_dataset(args.split_root, args.image_root, f"{tmp}/converted", args.dataset, args.setting)
        convert_s = time.perf_counter() - start
        split = load_dataset(
            f"{tmp}/converted", config_name(args.dataset, args.setting), split=args.split, cache_dir=f"{tmp}/cache"
        )
        collator = CLIPVGCollator(tokenizer)
        split_file = args.split_root / info.key / f"{info.key}_{args.split}.pth"
        image_dir = args.image_root / info.image_dir
        official_train = OfficialStyleDataset(
            split_file, image_dir, args.dataset, OfficialStyleTrainTransform(), tokenizer
        )
        ours_train = GroundingDataset(split, CLIPVGTrainTransform())
        identical = check_same_pixels(official_train, ours_train)
        checked = min(12, len(ours_train))
        settings = {
            "train": {
                "official-style": (official_train, None),
                "ours": (ours_train, collator),
                "ours + fast decode/resize (opt-in)": (GroundingDataset(split, FAST_TRAIN), collator),
                "ours, grouped by image (opt-in)": (ours_train, collator),
                "fast decode/resize + grouped": (GroundingDataset(split, FAST_TRAIN), collator),
            },
            "eval": {
                "official-style": (
                    OfficialStyleDataset(split_file, image_dir, args.dataset, CLIPVGEvalTransform(), tokenizer),
                    None,
                ),
                "ours": (GroundingDataset(split, CLIPVGEvalTransform()), collator),
            },
        }
        if args.jpeg_only:  # the RefCOCO case: every image a COCO JPEG (the fixture also holds PNG edge cases)
            keep = [i for i, row in enumerate(official_train.rows) if str(row[0]).lower().endswith((".jpg", ".jpeg"))]
            if not keep:
                raise ValueError(f"--jpeg_only: no expression of {split_file} is on a JPEG image")
            settings = {
                mode: {
                    name: (torch.utils.data.Subset(dataset, keep), collate)
                    for name, (dataset, collate) in paths.items()
                }
                for mode, paths in settings.items()
            }
        for mode, paths in settings.items():
            reference = paths["ours"][0]  # index i is the same expression in every path
            count = args.samples + args.batch_size
            if mode == "eval":  # evaluation loaders read the split in file order
                orders = {name: [i % len(reference) for i in range(count)] for name in paths}
            else:
                orders = {
                    name: grouped_order(reference, count, args.max_per_image)
                    if "grouped" in name
                    else random_order(reference, count)
                    for name in paths
                }
            for workers in args.workers:
                times: dict[str, list[float]] = {name: [] for name in paths}
                for _ in range(args.repeats):
                    for name, (dataset, collate) in paths.items():
                        times[name].append(loader_pass(dataset, collate, orders[name], workers, args.batch_size))
                base = times["official-style"]
                for name, seconds in times.items():
                    ratios = [b / s for b, s in zip(base, seconds, strict=True)]
                    per_decode = (
                        expressions_per_decode(reference, orders[name], args.batch_size)
                        if name != "official-style"
                        else 1.0
                    )
                    rows.append(
                        {
                            "mode": mode,
                            "workers": workers,
                            "path": name,
                            "expressions_per_decode": per_decode,
                            "samples_per_s": args.samples / statistics.median(seconds),
                            "speedup": statistics.median(ratios),
                            "speedup_min": min(ratios),
                            "speedup_max": max(ratios),
                            "times_s": seconds,
                        }
                    )
    load_after = os.getloadavg()

    chosen = len(keep) if args.jpeg_only else len(ours_train)
    shape = "" if args.expressions_per_image is None else f", {args.expressions_per_image} per JPEG image"
    print(
        f"data pipeline, {args.dataset}/{args.split}: {chosen} expressions{' (JPEG images only)' * args.jpeg_only}"
        f"{shape}, {args.samples} samples per "
        f"pass, batch {args.batch_size}, {args.repeats} interleaved repetitions, torch threads {args.threads} "
        f"(conversion took {convert_s:.2f} s)"
    )
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min); ours vs official-style "
        f"train samples bit-identical: {identical}/{checked}"
    )
    header = (
        f"{'transform':<10}{'workers':>8}  {'path':<36}{'samples/s':>10}{'speed-up':>10}{'(min-max)':>14}"
        f"{'expr/decode':>13}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        spread = f"({row['speedup_min']:.2f}-{row['speedup_max']:.2f})"
        print(
            f"{row['mode']:<10}{row['workers']:>8}  {row['path']:<36}{row['samples_per_s']:>10.1f}"
            f"{row['speedup']:>9.2f}x{spread:>14}{row['expressions_per_decode']:>13.2f}"
        )
    result = {
        "dataset": args.dataset,
        "split": args.split,
        "jpeg_only": args.jpeg_only,
        "expressions": chosen,
        "expressions_per_image": args.expressions_per_image,
        "samples": args.samples,
        "batch_size": args.batch_size,
        "max_per_image": args.max_per_image,
        "repeats": args.repeats,
        "threads": args.threads,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "identical_samples": identical,
        "checked_samples": checked,
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
