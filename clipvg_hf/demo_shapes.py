"""A small synthetic grounding dataset, generated deterministically and offline, in the official on-disk layout.

Each image shows a few coloured shapes on a plain background. Every shape gets one referring expression, of one of
four types, chosen among those that identify it uniquely in its image:

* ``attribute``: colour and shape ("the red circle"); colours within an image are distinct;
* ``relation``: a shape and its place next to another object ("the circle left of the red square");
* ``comparative``: the bigger or smaller of two objects of a shape ("the bigger triangle");
* ``ordinal``: the place among the objects of a shape, counted from the left ("the second square from the left").

The last three name no colour and are only generated where another object has the same shape, so they can only be
resolved by reading the relation, the comparison or the order. The pack is written like the official ones
(``<root>/splits/shapes/shapes_<split>.pth`` with Flickr-style rows ``(image file, [x1, y1, x2, y2], expression)``
and ``<root>/image_data/shapes/images/*.png``) so it goes through the same converter and loader as real data.
``objects.json`` records every object of every image and the type of every expression, for language-blind
baselines and per-type accuracy.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = [
    "COLORS",
    "EXPRESSION_TYPES",
    "SHAPES",
    "ShapesSpec",
    "Scene",
    "draw_scene",
    "make_scene",
    "write_shapes_pack",
]

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")
EXPRESSION_TYPES = ("attribute", "relation", "comparative", "ordinal")
ORDINALS = ("first", "second", "third", "fourth")
# how often a type is drawn where it can be: a relation to another object is rarely possible, so it is preferred
TYPE_WEIGHTS = {"attribute": 1.0, "relation": 4.0, "comparative": 1.0, "ordinal": 1.0}
MARGIN = 4  # pixels by which a relation, an order or a size difference must hold: every expression is clear-cut


@dataclass(frozen=True)
class ShapesSpec:
    """How the scenes of one split are drawn."""

    image_size: int = 64
    min_objects: int = 2
    max_objects: int = 3
    min_side: float = 0.2  # object side as a fraction of the image side
    max_side: float = 0.4
    shared_shape: float = 0.0  # probability that a scene repeats one shape (where relational expressions arise)
    relational: float = 1.0  # probability that an object that can take a relational expression gets one
    columns: bool = False  # object i in the i-th of ``count`` vertical strips (easy to localise: for quick checks)


@dataclass
class Scene:
    """One generated image: its objects' boxes (x1, y1, x2, y2), colours and shapes, and the background."""

    background: tuple[int, int, int]
    boxes: list[tuple[int, int, int, int]]
    colors: list[str]
    shapes: list[str]

    def expressions(self) -> list[str]:
        """The ``attribute`` expression of every object (colour and shape)."""
        return [f"the {color} {shape}" for color, shape in zip(self.colors, self.shapes)]

    def candidate_expressions(self, index: int) -> dict[str, list[str]]:
        """Every expression of each type that identifies object ``index`` and no other object of the scene."""
        shape = self.shapes[index]
        same = [i for i, s in enumerate(self.shapes) if s == shape]
        found: dict[str, list[str]] = {"attribute": [f"the {self.colors[index]} {shape}"]}
        if len(same) < 2:
            return found  # the shape alone identifies the object: no relational expression needs the words
        centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in self.boxes]
        relations = []
        for anchor in range(len(self.boxes)):
            if anchor in same:
                continue
            for phrase, axis, sign in (("left of", 0, -1), ("right of", 0, 1), ("above", 1, -1), ("below", 1, 1)):
                offsets = {i: sign * (centres[i][axis] - centres[anchor][axis]) for i in same}
                if offsets[index] > MARGIN and all(offsets[i] < -MARGIN for i in same if i != index):
                    relations.append(f"the {shape} {phrase} the {self.colors[anchor]} {self.shapes[anchor]}")
        if relations:
            found["relation"] = relations
        sides = [b[2] - b[0] for b in self.boxes]
        if len(same) == 2:
            other = same[1] if same[0] == index else same[0]
            if abs(sides[index] - sides[other]) > MARGIN:
                found["comparative"] = [f"the {'bigger' if sides[index] > sides[other] else 'smaller'} {shape}"]
        xs = sorted(centres[i][0] for i in same)
        if all(b - a > MARGIN for a, b in zip(xs, xs[1:])):
            rank = xs.index(centres[index][0])
            found["ordinal"] = [f"the {ORDINALS[rank]} {shape} from the left"]
        return found

    def referring_expressions(self, rng: np.random.Generator, relational: float = 1.0) -> list[tuple[str, str]]:
        """One (type, expression) per object: a type drawn among those that identify it, then one of its
        expressions of that type. An object whose shape repeats gets a relational type with probability
        ``relational`` (types weighted by ``TYPE_WEIGHTS``), otherwise its colour and shape."""
        chosen = []
        for index in range(len(self.boxes)):
            candidates = self.candidate_expressions(index)
            if len(candidates) > 1:
                keep = ["attribute"] if rng.random() >= relational else [k for k in candidates if k != "attribute"]
                candidates = {kind: candidates[kind] for kind in keep}
            kinds = sorted(candidates, key=EXPRESSION_TYPES.index)
            weights = np.array([TYPE_WEIGHTS[kind] for kind in kinds], dtype=np.float64)
            kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
            options = candidates[kind]
            chosen.append((kind, options[int(rng.integers(len(options)))]))
        return chosen


def _overlaps(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]]) -> bool:
    return any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in others)


def make_scene(rng: np.random.Generator, spec: ShapesSpec) -> Scene:
    """Draw object count, distinct colours, shapes and non-overlapping positions."""
    size = spec.image_size
    count = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    colors = [str(c) for c in rng.permutation(list(COLORS))[:count]]
    shapes = [SHAPES[int(i)] for i in rng.integers(0, len(SHAPES), count)]
    if count >= 2 and spec.shared_shape and rng.random() < spec.shared_shape:
        shapes[1] = shapes[0]  # a repeated shape: only a relation, a comparison or an order tells the two apart
    low, high = int(spec.min_side * size), int(spec.max_side * size)
    ranges = [(low, high)] * count
    if count >= 2 and shapes[0] == shapes[1] and high - low > MARGIN + 1 and rng.random() < 0.5:  # bigger / smaller
        middle = (low + high) // 2
        ranges[:2] = [(low, middle - MARGIN // 2), (middle + MARGIN // 2 + 1, high)]
    for _layout in range(100):  # a layout that does not fit is drawn again as a whole
        boxes: list[tuple[int, int, int, int]] = []
        for smallest, largest in ranges:
            side = int(rng.integers(smallest, largest + 1))
            for _attempt in range(50):
                x, y = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
                if spec.columns:  # inside strip len(boxes) of count equal strips
                    strip = size // count
                    x = len(boxes) * strip + int(rng.integers(0, max(1, strip - side + 1)))
                box = (x, y, x + side, y + side)
                if not _overlaps(box, boxes):
                    boxes.append(box)
                    break
            else:
                break
        if len(boxes) == count:
            break
    else:
        raise RuntimeError(f"cannot place {count} objects of sides {ranges} in a {size}px image")
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
            expressions = scene.referring_expressions(rng, split_spec.relational)
            rows += [(file_name, list(box), text) for box, (_, text) in zip(scene.boxes, expressions)]
            objects[file_name] = {
                "boxes": scene.boxes,
                "colors": scene.colors,
                "shapes": scene.shapes,
                "expressions": [text for _, text in expressions],
                "types": [kind for kind, _ in expressions],
            }
        torch.save(rows, split_dir / f"shapes_{split}.pth")
        counts[split] = len(rows)
    (root / "objects.json").write_text(json.dumps(objects))
    return counts
