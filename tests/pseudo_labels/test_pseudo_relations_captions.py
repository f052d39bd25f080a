"""Geometric relation predicates and caption subject matching on hand-made detections, expected outputs written out."""

import random

import PIL.Image
import pytest

from clipvg_hf.pseudo_labels.captions import CaptionMatcher, lemma, subject_words
from clipvg_hf.pseudo_labels.detections import DetectedImage, ImageRecord
from clipvg_hf.pseudo_labels.relations import GeometricRelations, Relation, relation_targets, relation_text
from clipvg_hf.pseudo_labels.templates import Detection, TemplateEngine
from clipvg_hf.pseudo_labels.writer import Labeler

W, H = 640, 480


def det(label, box, score=0.9):
    return Detection(label, tuple(float(v) for v in box), score)


@pytest.mark.parametrize(
    ("subject", "obj", "predicate"),
    [
        ((280, 150, 330, 205), (200, 200, 450, 300), "on"),  # cup resting on the table top
        ((250, 310, 350, 380), (200, 200, 450, 300), "under"),  # dog just below the bench
        ((100, 100, 200, 400), (210, 150, 400, 420), "next to"),  # man beside the horse
        ((220, 220, 260, 260), (200, 200, 450, 400), "in"),  # apple inside the bowl
        ((0, 0, 50, 50), (400, 400, 450, 450), None),  # far apart
        ((100, 100, 200, 400), (420, 150, 600, 420), None),  # side by side but too far
        ((280, 20, 330, 60), (200, 200, 450, 300), None),  # above, but not touching
    ],
)
def test_geometric_predicate(subject, obj, predicate):
    assert GeometricRelations().predicate(subject, obj) == predicate


def test_relations_of_a_scene_keep_unique_triplets_ranked_in_detection_order():
    scene = [
        det("man", (100, 100, 200, 400), 0.9),
        det("horse", (210, 150, 400, 420), 0.8),
        det("cup", (430, 150, 480, 205), 0.7),
        det("table", (400, 200, 620, 300), 0.6),
        det("cup", (560, 150, 600, 205), 0.5),  # a second cup on the table: "cup on the table" is ambiguous
    ]
    found = GeometricRelations()(None, W, H, scene)
    assert [relation_text(r) for r in found] == [
        "man next to the horse",
        "horse next to the man",
        "horse next to the table",
        "table next to the horse",
    ]
    assert found[0] == Relation(scene[0], "next to", scene[1], pytest.approx(0.72))
    assert [relation_text(r) for r in GeometricRelations(max_per_image=2)(None, W, H, scene)] == [
        "man next to the horse",
        "horse next to the man",
    ]


def test_relation_targets_follow_the_template_filters():
    detections = [
        det("man", (0, 0, 300, 400), 0.9),
        det("man", (5, 5, 300, 400), 0.5),  # overlap: 2nd goes
        det("cup", (10, 10, 20, 20), 0.9),  # tiny
        det("shirt", (20, 20, 200, 200), 0.9),  # clothes are never targets
        det("table", (300, 200, 640, 480), 0.4),
    ]
    targets = relation_targets(TemplateEngine(), detections, W, H)
    assert [(t.label, t.box) for t in targets] == [
        ("man", (1.0, 1.0, 300.0, 400.0)),
        ("table", (300.0, 200.0, 640.0, 480.0)),
    ]


class WidestPairModel:
    """A plugged-in relation model: it sees the pixels and names the widest box "beside" the next one."""

    def __init__(self):
        self.seen = []

    def __call__(self, image, width, height, detections):
        self.seen.append((image.size, width, height, [d.label for d in detections]))
        subject, other = sorted(detections, key=lambda d: d.box[0] - d.box[2])[:2]
        return [Relation(subject, "beside", other, 1.0)]


def test_a_plugged_in_relation_model_gets_the_image_and_the_filtered_detections(tmp_path):
    PIL.Image.new("RGB", (W, H)).save(tmp_path / "a.png")
    item = DetectedImage(
        ImageRecord(0, "a.png", str(tmp_path / "a.png")),
        W,
        H,
        [det("man", (100, 100, 200, 400)), det("horse", (210, 150, 500, 420)), det("cup", (10, 10, 20, 20))],
        None,
    )
    model = WidestPairModel()
    labels = Labeler(TemplateEngine(), model).label_image(item, random.Random(0), random.Random(0))
    assert model.seen == [((W, H), W, H, ["man", "horse"])]  # the tiny cup was filtered out
    assert labels["relation"] == [("horse beside the man", (210.0, 150.0, 500.0, 420.0))]


@pytest.mark.parametrize(
    ("caption", "words"),
    [
        ("A man riding a horse on the beach", ["a", "man"]),
        ("two dogs sitting under a bench", ["two", "dog"]),
        ("There are three young women with umbrellas", ["three", "young", "woman"]),
        ("a tennis racket and a ball", ["a", "tennis", "racket"]),
        ("Boxes of glasses", ["box"]),
        ("standing in the rain", []),
    ],
)
def test_rule_based_subject_words(caption, words):
    assert subject_words(caption, use_spacy=False) == words


def test_lemma_rule():
    assert [lemma(w) for w in ("men", "puppies", "buses", "boxes", "cats", "grass", "bus", "jeans")] == [
        "man",
        "puppy",
        "bus",
        "box",
        "cat",
        "grass",
        "bus",
        "jeans",
    ]


def test_caption_matching_by_class_synonym_and_multiword():
    matcher = CaptionMatcher(TemplateEngine(), use_spacy=False)
    detections = [
        det("dog", (0, 0, 200, 200), 0.9),
        det("person", (300, 0, 500, 400), 0.8),
        det("tennis racket", (100, 250, 300, 450), 0.7),
        det("person", (520, 0, 640, 400), 0.6),
    ]
    # "man" is a synonym of COCO's "person": both person boxes match, people first (official order)
    got = matcher.matches("A man playing with a dog", detections, W, H)
    assert [(d.label, d.box) for d in got] == [
        ("person", (300.0, 1.0, 500.0, 400.0)),
        ("person", (520.0, 1.0, 640.0, 400.0)),
    ]
    assert [d.label for d in matcher.matches("a tennis racket on the grass", detections, W, H)] == ["tennis racket"]
    assert [d.label for d in matcher.matches("two dogs in a park", detections, W, H)] == ["dog"]
    assert matcher.matches("a red car parked outside", detections, W, H) == []  # unmatched: counted by the writer
    many = [det("dog", (i * 60, 0, i * 60 + 59, 300), 0.9) for i in range(8)]
    matched = matcher.matches("dogs", many, W, H)
    assert len(matched) == 8
    assert matcher.sample(matched, random.Random(20211024)) == random.Random(20211024).sample(matched, 6)
