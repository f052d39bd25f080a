"""Builders of small split packs in the official CLIP-VG / TransVG on-disk formats, for the data tests."""

from __future__ import annotations

from pathlib import Path

import PIL.Image
import PIL.ImageDraw
import torch

from utils.paths import PARITY_DIR

FIXTURE = PARITY_DIR
TINY = FIXTURE / "tiny"
PLACEHOLDER = "useless placeholder"
COCO_DIR = "other/images/mscoco/images/train2014"
REFERIT_DIR = "referit/images"
FLICKR_DIR = "Flickr30k/flickr30k-images"


def draw_box_image(path: Path, size: tuple[int, int], box: tuple[int, int, int, int] | None = None) -> Path:
    """A grey image of ``size`` (w, h) with a white filled rectangle at ``box`` (x1, y1, x2, y2, exclusive ends)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = PIL.Image.new("RGB", size, (60, 60, 60))
    if box is not None:
        PIL.ImageDraw.Draw(image).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(255, 255, 255))
    image.save(path)
    return path


def save_split(path: Path, rows: list[tuple]) -> Path:
    """Write a list of row tuples with ``torch.save``, as the official packs are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(rows, path)
    return path


def coco_pseudo_row(image: str, xywh: list[float], text: str) -> tuple:
    """A RefCOCO-family pseudo-label row: (image, placeholder, x y w h, text, placeholder)."""
    return (image, PLACEHOLDER, xywh, text, PLACEHOLDER)


def coco_full_row(image: str, ann: str, xywh: list[float], text: str) -> tuple:
    """A supervised RefCOCO-family row with an annotation file and relation parses."""
    return (image, ann, xywh, text, [("r1", ["none"])])


def build_pack(root: Path) -> tuple[Path, Path]:
    """A small pack in the official layout: unc (train_pseudo, val, testA), referit test, flickr test.

    Returns (split_root, image_root).
    """
    images, splits = root / "image_data", root / "splits"
    draw_box_image(images / COCO_DIR / "a.jpg", (320, 240), (40, 30, 140, 130))
    draw_box_image(images / COCO_DIR / "b.png", (200, 400), (10, 200, 190, 390))
    draw_box_image(images / COCO_DIR / "c.png", (500, 100))
    draw_box_image(images / REFERIT_DIR / "r.jpg", (300, 300), (100, 100, 200, 250))
    draw_box_image(images / FLICKR_DIR / "f.jpg", (640, 480), (0, 0, 320, 240))
    save_split(
        splits / "unc" / "unc_train_pseudo.pth",
        [
            coco_pseudo_row("a.jpg", [40.7, 30.2, 100.6, 100.9], "white square"),
            coco_pseudo_row("b.png", [10.0, 200.0, 180.0, 190.0], "box at the bottom"),
            coco_pseudo_row("a.jpg", [0.0, 0.0, 320.0, 240.0], "the whole picture"),
            coco_pseudo_row("c.png", [10.5, 10.5, 50.5, 50.5], "grey area"),
        ],
    )
    save_split(
        splits / "unc" / "unc_val.pth",
        [
            coco_full_row("b.png", "1.pth", [10.0, 200.0, 180.0, 190.0], "Bottom Box"),
            coco_full_row("a.jpg", "2.pth", [40.0, 30.0, 100.0, 100.0], "white square"),
        ],
    )
    save_split(
        splits / "unc" / "unc_testA.pth", [coco_full_row("a.jpg", "3.pth", [40.0, 30.0, 100.0, 100.0], "square")]
    )
    save_split(
        splits / "referit" / "referit_test.pth", [("r.jpg", "r.pth", [100, 100, 200, 250], "the white thing", [])]
    )
    save_split(splits / "flickr" / "flickr_test.pth", [("f.jpg", [0, 0, 320, 240], "a white corner")])
    return splits, images


def build_multi_source(split_root: Path, key: str = "unc", write_merged: bool = True) -> list[tuple]:
    """A three-source ``train_separate/`` (template, relation, caption) and, optionally, its merged file."""
    template = [
        coco_pseudo_row("a.jpg", [40.0, 30.0, 100.0, 100.0], "white square"),
        coco_pseudo_row("b.png", [10.0, 200.0, 180.0, 190.0], "white box"),
    ]
    relation = [coco_pseudo_row("a.jpg", [40.0, 30.0, 100.0, 100.0], "square on grey")]
    caption = [
        coco_pseudo_row("c.png", [0.0, 0.0, 100.0, 50.0], "a grey strip"),
        coco_pseudo_row("a.jpg", [40.0, 30.0, 100.0, 100.0], "a white square in a picture"),
    ]
    folder = split_root / key / "train_separate"
    # written out of order on purpose: the numeric prefix, not the directory listing, decides the order
    save_split(folder / f"3_{key}_train_pseudo_caption_0_5.pth", caption)
    save_split(folder / f"1_{key}_train_pseudo_template_0_5.pth", template)
    save_split(folder / f"2_{key}_train_pseudo_relation_0_5.pth", relation)
    merged = template + relation + caption
    if write_merged:
        save_split(split_root / key / f"{key}_train_pseudo.pth", merged)
    return merged
