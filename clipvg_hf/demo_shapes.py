"""A small synthetic grounding dataset, generated deterministically and offline, in the official on-disk layout.

Each image shows a few coloured shapes on a plain background; every shape gets a referring expression naming its
colour and shape ("the red circle"). The colours in an image are distinct, so the expression always identifies
one object, while the objects are alike in everything else: a model must read the expression to find the box.
The pack is written like the official ones (``<root>/splits/shapes/shapes_<split>.pth`` with Flickr-style rows
``(image file, [x1, y1, x2, y2], expression)`` and ``<root>/image_data/shapes/images/*.png``) so it goes through
the same converter and loader as real data. ``objects.json`` records every object of every image, for
language-blind baselines.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = ["COLORS", "SHAPES", "ShapesSpec", "Scene", "draw_scene", "make_scene", "write_shapes_pack"]

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")


@dataclass(frozen=True)
class ShapesSpec:
    """How the scenes of one split are drawn."""

    image_size: int = 64
    min_objects: int = 2
    max_objects: int = 3
    min_side: float = 0.2  # object side as a fraction of the image side
    max_side: float = 0.4


@dataclass
class Scene:
    """One generated image: its objects' boxes (x1, y1, x2, y2), colours and shapes, and the background."""

    background: tuple[int, int, int]
    boxes: list[tuple[int, int, int, int]]
    colors: list[str]
    shapes: list[str]

    def expressions(self) -> list[str]:
        return [f"the {color} {shape}" for color, shape in zip(self.colors, self.shapes)]


def _overlaps(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]]) -> bool:
    return any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in others)


def make_scene(rng: np.random.Generator, spec: ShapesSpec) -> Scene:
    """Draw object count, distinct colours, shapes and non-overlapping positions."""
    size = spec.image_size
    count = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    colors = [str(c) for c in rng.permutation(list(COLORS))[:count]]
    shapes = [SHAPES[int(i)] for i in rng.integers(0, len(SHAPES), count)]
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(count):
        for _attempt in range(200):
            side = int(rng.integers(int(spec.min_side * size), int(spec.max_side * size) + 1))
            x, y = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
            box = (x, y, x + side, y + side)
            if not _overlaps(box, boxes):
                break
        else:
            raise RuntimeError(f"cannot place {count} objects of side {side} in a {size}px image")
        boxes.append(box)
    background = tuple(int(v) for v in rng.integers(200, 256, 3))
    return Scene(background, boxes, colors, shapes)


def draw_scene(scene: Scene, size: int) -> Image.Image:
    """Render a scene: filled circles, squares and upward triangles inside their boxes."""
    image = Image.new("RGB", (size, size), scene.background)
    draw = ImageDraw.Draw(image)
    for (x1, y1, x2, y2), color, shape in zip(scene.boxes, scene.colors, scene.shapes):
        fill = COLORS[color]
        if shape == "circle":
            draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=fill)
        elif shape == "square":
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=fill)
        else:
            draw.polygon([(x1, y2 - 1), (x2 - 1, y2 - 1), ((x1 + x2 - 1) / 2, y1)], fill=fill)
    return image


def write_shapes_pack(
    root: str | Path,
    images_per_split: dict[str, int],
    spec: ShapesSpec,
    seed: int = 0,
    specs: dict[str, ShapesSpec] | None = None,
) -> dict[str, int]:
    """Write the pack under ``root``; returns the number of expressions per split.

    Each split has its own random stream (seed, split), so changing one split's size leaves the others unchanged.
    ``specs`` overrides ``spec`` per split.
    """
    root = Path(root)
    image_dir = root / "image_data" / "shapes" / "images"
    split_dir = root / "splits" / "shapes"
    image_dir.mkdir(parents=True, exist_ok=True)
    split_dir.mkdir(parents=True, exist_ok=True)
    objects: dict[str, dict] = {}
    counts: dict[str, int] = {}
    for split_number, (split, n_images) in enumerate(sorted(images_per_split.items())):
        split_spec = (specs or {}).get(split, spec)
        rng = np.random.default_rng([seed, split_number])
        rows = []
        for index in range(n_images):
            scene = make_scene(rng, split_spec)
            file_name = f"{split}_{index:05d}.png"
            draw_scene(scene, split_spec.image_size).save(image_dir / file_name)
            rows += [(file_name, list(box), text) for box, text in zip(scene.boxes, scene.expressions())]
            objects[file_name] = {"boxes": scene.boxes, "colors": scene.colors, "shapes": scene.shapes}
        torch.save(rows, split_dir / f"shapes_{split}.pth")
        counts[split] = len(rows)
    (root / "objects.json").write_text(json.dumps(objects))
    return counts
