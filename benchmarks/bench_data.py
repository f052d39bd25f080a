#!/usr/bin/env python
"""Data-pipeline throughput (samples/s): an official-style loader vs the parquet pipeline of ``clipvg_hf.data``.

- *official-style*: the ``.pth`` list in memory, each sample opens its image file from disk with PIL, truncates the
  box to int, runs the augmentation and tokenizes to a fixed 77 tokens; PyTorch's default collate.
- *ours*: the converted parquet split (images embedded), :class:`GroundingDataset` + :class:`CLIPVGCollator`
  (dynamic padding).

Both use the same augmentation code (:class:`CLIPVGTrainTransform`, or the eval transform), so the difference is
the I/O, decoding and batching path. Runs on the parity fixture by default (13 images, 20 expressions, sampled
with replacement); point ``--split-root/--image-root`` at a real pack for real numbers. Not a test.

    python benchmarks/bench_data.py --samples 512 --workers 0 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from datasets import load_dataset

from clipvg_hf.data import (
    DATASETS,
    CLIPVGCollator,
    CLIPVGEvalTransform,
    CLIPVGTrainTransform,
    GroundingDataset,
    config_name,
    convert_dataset,
    load_split_file,
    sample_rng,
)
from clipvg_hf.data.splits import official_box
from clipvg_hf.processing_clipvg import build_clip_tokenizer, clean_text

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "fixtures" / "parity" / "tiny"


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
        return {"pixel_values": out["pixel_values"], "pixel_mask": out["pixel_mask"], "labels": out["labels"],
                "input_ids": ids["input_ids"][0], "attention_mask": ids["attention_mask"][0]}


def measure(dataset: torch.utils.data.Dataset, collate: Any, samples: int, workers: int, batch_size: int) -> float:
    """Samples per second of one pass over ``samples`` randomly drawn items (after one warm-up batch).

    Re-seeds torch first, so both pipelines draw the same items and the same augmentations.
    """
    torch.manual_seed(0)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=samples + batch_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                         collate_fn=collate)
    iterator = iter(loader)
    next(iterator)  # warm-up: worker start, first decode
    start, count = time.perf_counter(), 0
    for batch in iterator:
        count += batch["pixel_values"].shape[0]
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split-root", type=Path, default=TINY / "splits")
    parser.add_argument("--image-root", type=Path, default=TINY / "image_data")
    parser.add_argument("--dataset", default="unc")
    parser.add_argument("--split", default="train_pseudo")
    parser.add_argument("--setting", default="unsup-single")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()

    torch.manual_seed(0)
    tokenizer = build_clip_tokenizer()
    info = DATASETS[args.dataset]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        convert_dataset(args.split_root, args.image_root, tmp, args.dataset, args.setting)
        convert_s = time.perf_counter() - start
        split = load_dataset(tmp, config_name(args.dataset, args.setting), split=args.split, cache_dir=f"{tmp}/cache")
        collator = CLIPVGCollator(tokenizer)
        rows = []
        for mode, transform in (("train", CLIPVGTrainTransform()), ("eval", CLIPVGEvalTransform())):
            official = OfficialStyleDataset(args.split_root / info.key / f"{info.key}_{args.split}.pth",
                                            args.image_root / info.image_dir, args.dataset, transform, tokenizer)
            ours = GroundingDataset(split, transform)
            for workers in args.workers:
                a = measure(official, None, args.samples, workers, args.batch_size)
                b = measure(ours, collator, args.samples, workers, args.batch_size)
                rows.append((mode, workers, a, b))
    print(f"data pipeline, {args.dataset}/{args.split}: {len(ours)} expressions, {args.samples} samples per run, "
          f"batch {args.batch_size}, torch threads {torch.get_num_threads()} (conversion took {convert_s:.2f} s)")
    print(f"{'transform':<10}{'workers':>8}{'official-style':>18}{'clipvg_hf':>14}{'ratio':>8}")
    for mode, workers, a, b in rows:
        print(f"{mode:<10}{workers:>8}{a:>14.1f} s/s{b:>10.1f} s/s{b / a:>8.2f}")


if __name__ == "__main__":
    main()
