"""Class and attribute vocabularies shipped with the package (see ``vocab/README.md`` for origin and licence)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

__all__ = [
    "ClassGroups",
    "attribute_vocabulary",
    "coco_classes",
    "read_vocabulary",
    "visual_genome_classes",
]


def read_vocabulary(name: str) -> tuple[str, ...]:
    """Lines of a packaged vocabulary file, each with its final character dropped as the official reader does.

    The official generator reads every list with ``line[:-1]``; all shipped files end in a newline, so this is the
    line without its newline.
    """
    text = resources.files(__package__).joinpath("vocab", name).read_text(encoding="utf-8")
    return tuple(line for line in text.split("\n")[:-1]) if text.endswith("\n") else tuple(text.split("\n"))


@lru_cache(maxsize=None)
def attribute_vocabulary() -> tuple[str, ...]:
    """The 400 Visual Genome attribute words (first comma alias, lower case, stripped), in vector order."""
    return tuple(line.split(",")[0].lower().strip() for line in read_vocabulary("attributes_vocab.txt"))


@lru_cache(maxsize=None)
def visual_genome_classes() -> tuple[str, ...]:
    """The 1600 Visual Genome object classes (without ``__background__``)."""
    return read_vocabulary("visual_genome_detect_classes.txt")[1:]


@lru_cache(maxsize=None)
def coco_classes() -> tuple[str, ...]:
    """The 80 COCO detection categories in category-id order."""
    return read_vocabulary("coco_classes.txt")


@dataclass(frozen=True)
class ClassGroups:
    """Which detector classes are people and which are clothes (by body slot); every other class is a *thing*.

    Membership is an exact string test, as in the official generator. The defaults are the official lists.
    """

    people: frozenset[str]
    hat: tuple[str, ...]
    shirt: tuple[str, ...]
    pants: tuple[str, ...]
    shoes: tuple[str, ...]
    clothes: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "clothes", frozenset(self.hat + self.shirt + self.pants + self.shoes))

    @classmethod
    def official(cls) -> ClassGroups:
        """The Pseudo-Q lists (28 people classes; 10 hat, 41 shirt, 14 pants, 10 shoes classes)."""
        return _official_groups()

    def is_people(self, label: str) -> bool:
        return label in self.people

    def is_clothes(self, label: str) -> bool:
        return label in self.clothes

    def slot(self, label: str) -> str | None:
        """The first of hat, shirt, pants, shoes whose list holds ``label`` (the official routing order)."""
        for name in ("hat", "shirt", "pants", "shoes"):
            if label in getattr(self, name):
                return name
        return None


@lru_cache(maxsize=None)
def _official_groups() -> ClassGroups:
    return ClassGroups(
        people=frozenset(read_vocabulary("detect_people_classes.txt")),
        hat=read_vocabulary("detect_hat_classes.txt"),
        shirt=read_vocabulary("detect_shirt_classes.txt"),
        pants=read_vocabulary("detect_pants_classes.txt"),
        shoes=read_vocabulary("detect_shoes_classes.txt"),
    )
