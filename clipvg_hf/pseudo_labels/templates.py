"""Pseudo-template labels: the rules of the official CLIP-VG / Pseudo-Q template generator, re-implemented exactly.

Given one image's object detections and attribute detections (pixel ``x1, y1, x2, y2`` boxes with scores), the engine
builds the same candidate expressions, in the same order, as the official ``pseudo_query_generation.py``, and samples
``each_image_query`` of them with the same random stream. The steps, each a function below:

1. a box coordinate ``x1 = 0`` / ``y1 = 0`` is set to 1; boxes with ``x1 > x2`` or ``y1 > y2`` are dropped;
2. classes fall into *people*, *clothes* and *things* by exact membership in the official lists (:class:`ClassGroups`);
3. people and things smaller than ``tiny_area_ratio`` of the image are dropped (clothes never);
4. within each group, every pair with IoU above ``overlap_iou`` loses its lower-score box (not NMS: removed boxes
   still remove others);
5. attribute detections take their top attribute when its score exceeds ``attr_conf_thresh`` (an attribute word
   contained in the class name is removed from it: "young man"/young -> "man"), are overlap-filtered the same way,
   and every object takes the attribute of the *last* attribute box of its class with IoU above ``attr_iou_thresh``;
6. clothes boxes go to every person holding more than ``clothes_inside`` of their area (hats only in the top quarter
   of the person, pants only in the lower half);
7. spatial words per class with at least two instances (left / right / middle / center, top / bottom, front / behind),
   including the official use of the image *width* for the "top" of non-extreme instances;
8. the ``topn`` objects (people first, highest scores, kept in detection order), the templates, and sampling.

Scores are compared as Python floats (float64), as numpy 1.x did in the official environment; the top-n cut sorts
stably (the official ``np.argsort`` is unstable on some machines, so equal scores at the cut are machine-dependent).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from .vocab import ClassGroups, attribute_vocabulary

__all__ = [
    "OFFICIAL_SEED",
    "Candidate",
    "Detection",
    "ImageDetections",
    "TemplateConfig",
    "TemplateEngine",
    "box_iou",
    "top_attribute",
]

#: ``random.seed(20211024)`` of the official generator (one stream per split file, images in list order).
OFFICIAL_SEED = 20211024

_ON_THE = ("left", "right")
_IN_THE = ("front", "behind", "middle", "center")


@dataclass(frozen=True)
class Detection:
    """One detector output: class name, pixel box ``(x1, y1, x2, y2)``, score, and optionally its top attribute."""

    label: str
    box: tuple[float, float, float, float]
    score: float
    attribute: str | None = None
    attribute_score: float = 0.0


@dataclass(frozen=True)
class ImageDetections:
    """Everything the template engine needs of one image."""

    file_name: str
    width: int
    height: int
    detections: Sequence[Detection]
    attr_detections: Sequence[Detection] = ()


@dataclass(frozen=True)
class Candidate:
    """A candidate expression: its text, the target box (after the 0 -> 1 fix) and the index of its detection."""

    text: str
    box: tuple[float, float, float, float]
    detection: int


@dataclass(frozen=True)
class TemplateConfig:
    """Every constant of the official generator, with its official value as the default."""

    topn: int = 3  # --topn (official default and release script)
    each_image_query: int = 6  # --each_image_query of the release script (the argparse default is 10)
    attr_iou_thresh: float = 0.5  # --attr_iou_thresh: object box <-> attribute box IoU, strict
    attr_conf_thresh: float = 0.3  # --attr_conf_thresh: top attribute score, strict
    tiny_area_ratio: float = 1 / 64  # people / things with area / image area below this are dropped (strict)
    overlap_iou: float = 0.4  # pairwise overlap removal within a group (strict)
    clothes_inside: float = 0.75  # fraction of a clothes box inside a person to attach it (strict)
    hat_top: float = 0.75  # hat centre must satisfy (person y2 - cy) / person h > this (top quarter)
    pants_bottom: float = 0.5  # pants centre must satisfy (person y2 - cy) / person h < this (lower half)
    spatial_spread: float = 50.0  # px spread of centres needed for left/right and top/bottom (strict)
    behind_ratio: float = 0.4  # area / largest area below this: behind (strict)
    front_ratio: float = 0.8  # area / largest area above this: front, for the others of >= 4 instances (strict)
    top_uses_width: bool = True  # official: "top" for non-extreme instances tests cy < W/4 (H/4 was meant)
    seed: int = OFFICIAL_SEED


def top_attribute(scores: Iterable[float], vocabulary: Sequence[str] | None = None) -> tuple[str | None, float]:
    """The argmax attribute of a score vector (first maximum wins, as ``np.argmax``) and its score."""
    words = attribute_vocabulary() if vocabulary is None else vocabulary
    best, best_score = None, float("-inf")
    for index, score in enumerate(scores):
        if score > best_score:
            best, best_score = index, float(score)
    return (None, 0.0) if best is None else (words[best], best_score)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``x1, y1, x2, y2`` boxes computed as the official code does (0 when they do not overlap)."""
    # Not boxes_clipvg.grounding_iou on purpose: the template rules compare this value with thresholds, and the
    # official code computes it in Python floats (no epsilon, no clamp, 0 for touching boxes); tensors would round.
    inter = _overlap(a, b)
    if inter == 0:
        return 0
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _overlap(a: Sequence[float], b: Sequence[float]) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return 0 if width < 0 or height < 0 else width * height


def _area(box: Sequence[float]) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


class _Object:
    """A detection while the rules run: class, fixed box, score, attribute, spatial words, attached clothes."""

    __slots__ = ("label", "box", "score", "attr", "spatial", "clothes", "index")

    def __init__(self, label: str, box: list[float], score: float, attr: str | None, index: int, person: bool):
        self.label, self.box, self.score, self.attr, self.index = label, box, score, attr, index
        self.spatial: list[str] = []
        self.clothes: dict[str, list[_Object]] | None = (
            {"hat": [], "shirt": [], "pants": [], "shoes": []} if person else None
        )

    @property
    def noun(self) -> str:
        return f"{self.attr} {self.label}" if self.attr is not None else self.label


@dataclass
class _Groups:
    people: list[_Object] = field(default_factory=list)
    clothes: list[_Object] = field(default_factory=list)
    things: list[_Object] = field(default_factory=list)


class TemplateEngine:
    """Template pseudo-labels from detections, following the official rules exactly (see the module docstring)."""

    def __init__(self, config: TemplateConfig | None = None, groups: ClassGroups | None = None):
        self.config = config or TemplateConfig()
        self.groups = groups or ClassGroups.official()

    # -- stages -----------------------------------------------------------------------------------------------
    def _fixed_box(self, box: Sequence[float]) -> list[float] | None:
        """The official 0 -> 1 fix, or None for a box with x1 > x2 or y1 > y2."""
        x1, y1, x2, y2 = (float(v) for v in box[:4])
        x1 = 1.0 if x1 == 0 else x1
        y1 = 1.0 if y1 == 0 else y1
        return None if x1 > x2 or y1 > y2 else [x1, y1, x2, y2]

    def _group(self, objects: Iterable[_Object]) -> _Groups:
        groups = _Groups()
        for obj in objects:
            if obj.clothes is not None:
                groups.people.append(obj)
            elif self.groups.is_clothes(obj.label):
                groups.clothes.append(obj)
            else:
                groups.things.append(obj)
        return groups

    def object_groups(self, detections: Sequence[Detection]) -> _Groups:
        """People / clothes / things of the object detections (valid boxes only, detection order)."""
        objects = []
        for index, det in enumerate(detections):
            box = self._fixed_box(det.box)
            if box is not None:
                person = self.groups.is_people(det.label)
                objects.append(_Object(det.label, box, float(det.score), None, index, person))
        return self._group(objects)

    def attribute_groups(self, attr_detections: Sequence[Detection]) -> _Groups:
        """People / clothes / things of the attribute detections, class names stripped of their attribute word."""
        objects = []
        for index, det in enumerate(attr_detections):
            label, attr = det.label, None
            if det.attribute is not None and float(det.attribute_score) > self.config.attr_conf_thresh:
                attr = det.attribute
                if attr in label:
                    label = label.replace(f"{attr} ", "")
            box = self._fixed_box(det.box)
            if box is not None:
                objects.append(_Object(label, box, float(det.score), attr, index, self.groups.is_people(label)))
        return self._group(objects)

    def remove_tiny(self, objects: list[_Object], width: int, height: int) -> list[_Object]:
        """Drop boxes whose area / image area is below ``tiny_area_ratio``."""
        image_area = height * width
        return [obj for obj in objects if _area(obj.box) / image_area >= self.config.tiny_area_ratio]

    def remove_overlap(self, objects: list[_Object]) -> dict[str, list[_Object]]:
        """Pairwise overlap removal (lower score loses, ties: the later), regrouped by class in first-seen order."""
        removed = set()
        thresh = self.config.overlap_iou
        for i in range(len(objects) - 1):
            for j in range(i + 1, len(objects)):
                if box_iou(objects[i].box, objects[j].box) > thresh:
                    removed.add(i if objects[i].score < objects[j].score else j)
        by_class: dict[str, list[_Object]] = {}
        for index, obj in enumerate(objects):
            if index not in removed:
                by_class.setdefault(obj.label, []).append(obj)
        return by_class

    def match_attributes(self, objects: dict[str, list[_Object]], attributed: dict[str, list[_Object]]) -> None:
        """Each object takes the attribute of the last same-class attribute box above ``attr_iou_thresh``."""
        thresh = self.config.attr_iou_thresh
        for label, items in objects.items():
            boxes = [a for a in attributed.get(label, ()) if a.attr is not None]
            for obj in items:
                for other in boxes:
                    if box_iou(obj.box, other.box) > thresh:
                        obj.attr = other.attr

    def attach_clothes(self, people: dict[str, list[_Object]], clothes: dict[str, list[_Object]]) -> None:
        """Give each clothes box (class by class) to every person that holds enough of it, by body slot rules."""
        cfg = self.config
        for items in clothes.values():
            for cloth in items:
                slot = self.groups.slot(cloth.label)
                cloth_area = _area(cloth.box)
                centre_y = (cloth.box[3] + cloth.box[1]) / 2
                for persons in people.values():
                    for person in persons:
                        if cloth_area == 0 or _overlap(cloth.box, person.box) / cloth_area <= cfg.clothes_inside:
                            continue
                        height = person.box[3] - person.box[1]
                        if slot == "hat" and not (person.box[3] - centre_y) / height > cfg.hat_top:
                            continue
                        if slot == "pants" and not (person.box[3] - centre_y) / height < cfg.pants_bottom:
                            continue
                        person.clothes[slot].append(cloth)

    def spatial_words(self, descriptor: dict[str, list[_Object]], width: int, height: int) -> None:
        """Append the official spatial words to every instance of each class with at least two instances."""
        cfg = self.config
        for items in descriptor.values():
            n = len(items)
            if n < 2:
                continue
            cx = [(o.box[2] + o.box[0]) / 2 for o in items]
            cy = [(o.box[3] + o.box[1]) / 2 for o in items]
            lo, hi = _argmin(cx), _argmax(cx)
            if cx[hi] - cx[lo] > cfg.spatial_spread:
                items[lo].spatial.append("left")
                items[hi].spatial.append("right")
                for i in range(n):
                    if i in (lo, hi):
                        continue
                    if n == 3:
                        items[i].spatial += ["middle", "center"]
                    elif cx[i] > width * 3 / 4:
                        items[i].spatial.append("right")
                    elif cx[i] < width / 4:
                        items[i].spatial.append("left")
                    else:
                        items[i].spatial += ["middle", "center"]
            lo, hi = _argmin(cy), _argmax(cy)
            if cy[hi] - cy[lo] > cfg.spatial_spread:
                items[hi].spatial.append("bottom")
                items[lo].spatial.append("top")
                top_limit = (width if cfg.top_uses_width else height) / 4
                for i in range(n):
                    if i in (lo, hi):
                        continue
                    if cy[i] > height * 3 / 4:
                        items[i].spatial.append("bottom")
                    elif cy[i] < top_limit:
                        items[i].spatial.append("top")
        for items in descriptor.values():
            self._depth_words(items)

    def _depth_words(self, items: list[_Object]) -> None:
        if len(items) < 2:
            return
        cfg = self.config
        areas = [_area(o.box) for o in items]
        lo, hi = _argmin(areas), _argmax(areas)
        if areas[hi] == 0 or not areas[lo] / areas[hi] < cfg.behind_ratio:
            return
        items[lo].spatial.append("behind")
        items[hi].spatial.append("front")
        if len(items) <= 3:
            return
        for i in range(len(items)):
            if i in (lo, hi):
                continue
            ratio = areas[i] / areas[hi]
            if ratio < cfg.behind_ratio:
                items[i].spatial.append("behind")
            elif ratio > cfg.front_ratio:
                items[i].spatial.append("front")

    def top_objects(self, descriptor: dict[str, list[_Object]]) -> list[_Object]:
        """At most ``topn`` objects: the best-scored people, else all people and the best things; detection order."""
        people = [o for label, items in descriptor.items() if self.groups.is_people(label) for o in items]
        if len(people) > self.config.topn:
            return _keep_best(people, self.config.topn)
        room = self.config.topn - len(people)
        things = [o for label, items in descriptor.items() if not self.groups.is_people(label) for o in items]
        return people + _keep_best(things, room)

    def expressions(self, obj: _Object) -> list[str]:
        """Every template of one selected object, in the official order."""
        noun = obj.noun
        texts = [noun]
        for s in obj.spatial:
            texts.append(f"{noun} {s}")
            if s in _ON_THE:
                texts.append(f"{noun} on the {s}")
            if s in _IN_THE:
                texts.append(f"{noun} in the {s}")
            texts.append(f"{s} {noun}")
        if obj.clothes is None or not self.groups.is_people(obj.label):
            return texts
        worn = [c.noun for slot in ("hat", "shirt", "pants", "shoes") for c in obj.clothes[slot]]
        for c in worn:
            texts += [f"{noun} {c}", f"{c} {noun}"]
        for s in obj.spatial:
            for c in worn:
                texts += [
                    f"{noun} {c} {s}",
                    f"{noun} {s} {c}",
                    f"{c} {noun} {s}",
                    f"{c} {s} {noun}",
                    f"{s} {noun} {c}",
                    f"{s} {c} {noun}",
                ]
                prep = "on the" if s in _ON_THE else "in the" if s in _IN_THE else None
                if prep is not None:
                    texts += [f"{noun} {c} {prep} {s}", f"{noun} {prep} {s} {c}", f"{c} {noun} {prep} {s}"]
        return texts

    # -- per image --------------------------------------------------------------------------------------------
    def filtered(
        self, detections: Sequence[Detection], width: int, height: int
    ) -> tuple[dict[str, list[_Object]], ...]:
        """People, clothes and things (by class, first-seen order) after the 0 -> 1 fix, tiny and overlap removal."""
        objects = self.object_groups(detections)
        return (
            self.remove_overlap(self.remove_tiny(objects.people, width, height)),
            self.remove_overlap(objects.clothes),
            self.remove_overlap(self.remove_tiny(objects.things, width, height)),
        )

    def selected(self, image: ImageDetections) -> list[_Object]:
        """The top-n objects of one image after every filtering and matching rule (attributes, spatial words set)."""
        w, h = image.width, image.height
        people, clothes, things = self.filtered(image.detections, w, h)
        attributed = self.attribute_groups(image.attr_detections)
        for mine, theirs in ((people, attributed.people), (clothes, attributed.clothes), (things, attributed.things)):
            self.match_attributes(mine, self.remove_overlap(theirs))
        self.attach_clothes(people, clothes)
        descriptor = {**people, **things}
        self.spatial_words(descriptor, w, h)
        return self.top_objects(descriptor)

    def candidates(self, image: ImageDetections) -> list[Candidate]:
        """All candidate expressions of one image, in the official order."""
        out = []
        for obj in self.selected(image):
            box = tuple(obj.box)
            out += [Candidate(text, box, obj.index) for text in self.expressions(obj)]
        return out

    def sample(self, candidates: list[Candidate], rng: random.Random) -> list[Candidate]:
        """``each_image_query`` candidates drawn with ``rng.sample`` (also when exactly that many), else all."""
        if len(candidates) < self.config.each_image_query:
            return candidates
        return rng.sample(candidates, self.config.each_image_query)

    def generate(
        self, images: Iterable[ImageDetections], rng: random.Random | None = None
    ) -> Iterator[tuple[ImageDetections, list[Candidate]]]:
        """Sampled rows per image, in order, from one random stream (seeded with ``config.seed`` by default)."""
        rng = rng if rng is not None else random.Random(self.config.seed)
        for image in images:
            yield image, self.sample(self.candidates(image), rng)


def _argmin(values: list[float]) -> int:
    return min(range(len(values)), key=values.__getitem__)


def _argmax(values: list[float]) -> int:
    best = 0
    for i in range(1, len(values)):
        if values[i] > values[best]:
            best = i
    return best


def _keep_best(objects: list[_Object], count: int) -> list[_Object]:
    """Drop the ``len - count`` lowest scores (stable: the earlier of equal scores goes first); keep the order."""
    if len(objects) <= count:
        return objects
    drop = set(sorted(range(len(objects)), key=lambda i: objects[i].score)[: len(objects) - max(count, 0)])
    return [o for i, o in enumerate(objects) if i not in drop]
