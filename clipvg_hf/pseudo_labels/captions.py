"""Caption pseudo-labels: a captioner's sentence, its subject noun phrase matched to a detected box.

The official source captions each image (CLIPCap), takes the subject noun phrase with spaCy (the noun chunk of the
sentence root), lemmatises its words and keeps every detection whose class equals one of them (after the template
filters: valid box, tiny and overlap removal); up to ``each_image_query`` (6) such rows per image are sampled with
the official seed. Here the captioner is any transformers ``image-text-to-text`` model (BLIP, GIT, Florence-2, ...),
and the matching also accepts synonyms of a class (``SYNONYMS``: a COCO "person" box matches "a man ...") and
multi-word classes ("tennis racket"). A caption whose subject matches no detection is counted as unmatched.

Subject extraction uses spaCy's ``en_core_web_sm`` when it is installed; otherwise a rule-based fallback: the words
of the caption up to the first preposition, verb-like word (a form of be/have, or ending in "ing") or conjunction,
after a leading "there is/are", lemmatised by a small plural rule (irregular plurals, -ies, -es, -s).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .templates import Detection, TemplateEngine
from .vocab import ClassGroups

__all__ = ["SYNONYMS", "CaptionMatcher", "Captioner", "lemma", "subject_words"]

_STOP = frozenset(
    "on in at with near by under over above below behind beside next to of from into onto through across along "
    "around against and or while that which who is are was were be being been has have having sits sit sitting "
    "stands stand standing holds holding rides riding looks looking".split()
)
_IRREGULAR = {
    "men": "man",
    "women": "woman",
    "children": "child",
    "feet": "foot",
    "teeth": "tooth",
    "mice": "mouse",
    "geese": "goose",
    "people": "people",
    "glasses": "glasses",
    "jeans": "jeans",
    "pants": "pants",
    "shorts": "shorts",
    "skis": "skis",
    "scissors": "scissors",
    "bus": "bus",
}

#: Caption words accepted for a detector class besides the class name itself.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": tuple(sorted(ClassGroups.official().people - {"person"})),
    "couch": ("sofa",),
    "tv": ("television", "monitor", "screen"),
    "motorcycle": ("motorbike", "bike"),
    "bicycle": ("bike",),
    "airplane": ("plane", "jet", "aircraft"),
    "cell phone": ("phone", "cellphone"),
    "dining table": ("table",),
    "sports ball": ("ball",),
    "potted plant": ("plant",),
    "car": ("vehicle",),
    "cup": ("mug",),
}


def lemma(word: str) -> str:
    """A noun's singular by a small rule: irregular plurals, -ies -> -y, -(s|x|ch|sh)es -> drop es, -s -> drop s."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and re.search(r"(ses|xes|ches|shes)$", word):
        return word[:-2]
    if len(word) > 2 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


@lru_cache(maxsize=1)
def _spacy_model() -> Any:
    try:
        import spacy

        return spacy.load("en_core_web_sm")
    except (ImportError, OSError):
        return None


def subject_words(caption: str, use_spacy: bool = True) -> list[str]:
    """The lemmatised, lower-case words of the caption's subject noun phrase (spaCy or the rule-based fallback)."""
    nlp = _spacy_model() if use_spacy else None
    if nlp is not None:
        doc = nlp(caption)
        chunks = list(doc.noun_chunks)
        root = next((t for t in doc if t.head == t), None)
        chunk = next((c for c in chunks if root is not None and c.start <= root.i < c.end), None)
        chunk = chunk or (chunks[0] if chunks else None)
        return [t.lemma_.lower() for t in chunk] if chunk is not None else []
    words = re.findall(r"[a-z]+", caption.lower())
    if words[:2] in (["there", "is"], ["there", "are"]):
        words = words[2:]
    subject = []
    for word in words:
        if word in _STOP or (word.endswith("ing") and len(word) > 4):
            break
        subject.append(lemma(word))
    return subject


@dataclass(frozen=True)
class CaptionMatcher:
    """Rows of one caption: every filtered detection whose class (or a synonym) is in the caption's subject."""

    engine: TemplateEngine
    synonyms: dict[str, tuple[str, ...]] | None = None
    use_spacy: bool = True

    def _names(self, label: str) -> list[list[str]]:
        table = SYNONYMS if self.synonyms is None else self.synonyms
        return [name.split() for name in (label, *table.get(label, ()))]

    def matches(self, caption: str, detections: Sequence[Detection], width: int, height: int) -> list[Detection]:
        """Matched detections in the official order (people, clothes, things; filtered as the templates are)."""
        words = subject_words(caption, self.use_spacy)
        if not words:
            return []
        groups = self.engine.filtered(detections, width, height)
        ordered = [o for group in groups for items in group.values() for o in items]
        out = []
        for obj in ordered:
            if any(_contains(words, name) for name in self._names(obj.label)):
                out.append(Detection(obj.label, tuple(obj.box), obj.score))
        return out

    def sample(self, matched: list[Detection], rng: random.Random, each_image_query: int = 6) -> list[Detection]:
        """The official per-image sampling (``rng.sample`` when at least ``each_image_query`` rows)."""
        return matched if len(matched) < each_image_query else rng.sample(matched, each_image_query)


def _contains(words: list[str], name: list[str]) -> bool:
    name = [lemma(w) for w in name]
    return any(words[i : i + len(name)] == name for i in range(len(words) - len(name) + 1))


class Captioner:
    """One caption per image from an ``image-text-to-text`` pipeline (greedy decoding, like the official CLIPCap)."""

    def __init__(self, pipe: Any, prompt: str = "", max_new_tokens: int = 30, batch_size: int = 8):
        self.pipe, self.prompt, self.max_new_tokens, self.batch_size = pipe, prompt, max_new_tokens, batch_size

    def __call__(self, images: Sequence[Any]) -> list[str]:
        if not images:
            return []
        outputs = self.pipe(
            images=list(images),
            text=[self.prompt] * len(images),
            batch_size=self.batch_size,
            max_new_tokens=self.max_new_tokens,
            generate_kwargs={"do_sample": False},
        )
        captions = []
        for out in outputs:
            text = (out[0] if isinstance(out, list) else out)["generated_text"]
            if self.prompt and text.startswith(self.prompt):
                text = text[len(self.prompt) :]
            captions.append(" ".join(text.split()))
        return captions
