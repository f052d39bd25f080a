"""Relation pseudo-labels: subject-predicate-object expressions whose target is the subject box.

The official relation source is RelTR (a scene-graph transformer with no transformers port): it predicts
subject-predicate-object triplets and keeps the subject box with the text ``"<subject> <predicate> <object>"``.
:class:`GeometricRelations` replaces it with predicates read off the geometry of detection pairs
("cup on the table", "man next to the horse", "dog under the bench"); any other relation model can be plugged in
through the :class:`RelationModel` interface (a callable returning :class:`Relation` records).

Geometric rules, for a subject box ``s`` and an object box ``o`` of another class (pixels, ``x1, y1, x2, y2``):

- ``in``: at least ``inside`` (0.9) of ``s`` lies inside ``o`` and ``s`` is at most ``smaller`` (0.5) of ``o``'s area;
- ``on``: ``s`` overlaps ``o`` horizontally by at least ``x_overlap`` (0.5) of its width, its centre is above
  ``o``'s centre and its bottom edge lies within ``touch`` (0.25) of ``o``'s height from ``o``'s top edge;
- ``under``: the mirror image of ``on`` (centre below ``o``'s, top edge near ``o``'s bottom edge);
- ``next to``: vertical overlap of at least ``y_overlap`` (0.5) of the shorter box, no horizontal overlap beyond
  ``x_touch`` (0.1) of the narrower width, and a horizontal gap of at most ``gap`` (0.5) of the narrower width.

The first rule that holds names the pair (in the order above). A triplet (subject class, predicate, object class)
is kept only if it occurs once in the image (otherwise the text would not single out one box), and at most
``max_per_image`` (10, RelTR's top 10) triplets per image are kept, by the product of the two detection scores.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .templates import Detection, TemplateEngine

__all__ = ["GeometricRelations", "Relation", "RelationModel", "relation_targets", "relation_text"]


@dataclass(frozen=True)
class Relation:
    """One relation: the subject (the target) and object detections, the predicate and a ranking score."""

    subject: Detection
    predicate: str
    object: Detection
    score: float


class RelationModel(Protocol):
    """What a plugged-in relation model provides: relations of one image from its detections (and pixels)."""

    def __call__(self, image: Any, width: int, height: int, detections: Sequence[Detection]) -> list[Relation]: ...


def relation_text(relation: Relation) -> str:
    """``"<subject> <predicate> the <object>"``."""
    return f"{relation.subject.label} {relation.predicate} the {relation.object.label}"


@dataclass(frozen=True)
class GeometricRelations:
    """Relations from box geometry alone (the thresholds are documented in the module docstring)."""

    inside: float = 0.9
    smaller: float = 0.5
    x_overlap: float = 0.5
    touch: float = 0.25
    y_overlap: float = 0.5
    x_touch: float = 0.1
    gap: float = 0.5
    max_per_image: int = 10

    def predicate(self, s: Sequence[float], o: Sequence[float]) -> str | None:
        """The predicate of subject box ``s`` relative to object box ``o``, or None."""
        sw, sh, ow, oh = s[2] - s[0], s[3] - s[1], o[2] - o[0], o[3] - o[1]
        if sw <= 0 or sh <= 0 or ow <= 0 or oh <= 0:
            return None
        ix = min(s[2], o[2]) - max(s[0], o[0])
        iy = min(s[3], o[3]) - max(s[1], o[1])
        if ix > 0 and iy > 0 and ix * iy >= self.inside * sw * sh and sw * sh <= self.smaller * ow * oh:
            return "in"
        scy, ocy = (s[1] + s[3]) / 2, (o[1] + o[3]) / 2
        if ix >= self.x_overlap * sw:
            if scy < ocy and abs(s[3] - o[1]) <= self.touch * oh:
                return "on"
            if scy > ocy and abs(s[1] - o[3]) <= self.touch * oh:
                return "under"
        gap, narrow = max(s[0], o[0]) - min(s[2], o[2]), min(sw, ow)
        if iy >= self.y_overlap * min(sh, oh) and ix <= self.x_touch * narrow and gap <= self.gap * narrow:
            return "next to"
        return None

    def __call__(self, image: Any, width: int, height: int, detections: Sequence[Detection]) -> list[Relation]:
        found = []
        for i, s in enumerate(detections):
            for j, o in enumerate(detections):
                if i != j and s.label != o.label:
                    predicate = self.predicate(s.box, o.box)
                    if predicate is not None:
                        found.append(Relation(s, predicate, o, s.score * o.score))
        counts = Counter((r.subject.label, r.predicate, r.object.label) for r in found)
        unique = [r for r in found if counts[(r.subject.label, r.predicate, r.object.label)] == 1]
        order = sorted(range(len(unique)), key=lambda k: -unique[k].score)[: self.max_per_image]
        return [unique[k] for k in sorted(order)]


def relation_targets(
    engine: TemplateEngine, detections: Sequence[Detection], width: int, height: int
) -> list[Detection]:
    """The people and things that survive the template filters (valid box, not tiny, overlap removal), in order.

    Relations use the same detections the templates consider (clothes are never targets or objects).
    """
    people, _, things = engine.filtered(detections, width, height)
    kept = sorted((o for group in (people, things) for items in group.values() for o in items), key=lambda o: o.index)
    return [Detection(o.label, tuple(o.box), o.score) for o in kept]
