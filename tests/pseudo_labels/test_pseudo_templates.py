"""The template engine against the official generator's output on the same detections (tests/fixtures/templates).

The fixture's detections are synthetic but laid out so that every rule and template branch of the official code is
hit; the official code was run unmodified on them (see tests/fixtures/templates/README.md). Everything is compared
exactly: candidate texts, their order, their boxes, and the rows sampled with the official seed and image order.
"""

import json
import random
from pathlib import Path

import pytest

from clipvg_hf.pseudo_labels.templates import (
    OFFICIAL_SEED,
    Detection,
    ImageDetections,
    TemplateConfig,
    TemplateEngine,
    top_attribute,
)
from clipvg_hf.pseudo_labels.vocab import ClassGroups, attribute_vocabulary

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "templates"


@pytest.fixture(scope="module")
def fixture():
    inputs = json.loads((FIXTURE / "inputs.json").read_text())
    expected = json.loads((FIXTURE / "expected.json").read_text())
    by_key = {(im["dataset"], im["split"], im["image_file"]): im for im in inputs["images"]}
    return by_key, expected


def _attr_detection(entry: dict) -> Detection:
    vector = [0.0] * len(attribute_vocabulary())
    for name, index, score in entry["attributes"]:
        assert attribute_vocabulary()[index] == name
        vector[index] = score
    attribute, score = top_attribute(vector)
    return Detection(entry["label"], tuple(entry["box"]), entry["score"], attribute, score)


def _image(raw: dict) -> ImageDetections:
    return ImageDetections(
        raw["image_file"],
        raw["width"],
        raw["height"],
        [Detection(d["label"], tuple(d["box"]), d["score"]) for d in raw["detections"]],
        [_attr_detection(d) for d in raw["attr_detections"]],
    )


def test_candidates_and_sampled_rows_equal_the_official_generator(fixture):
    by_key, expected = fixture
    engine = TemplateEngine()
    images = candidates = rows = 0
    for run in expected["runs"]:
        rng = random.Random(OFFICIAL_SEED)  # one official process per (dataset, split), images in list order
        run_rows = []
        for official in run["images"]:
            image = _image(by_key[(run["dataset"], run["split"], official["image_file"])])
            boxes = {d["id"]: d["box_used"] for d in official["detections"]}
            got = engine.candidates(image)
            assert [(c.detection, c.text) for c in got] == [tuple(c) for c in official["candidates"]], image.file_name
            assert all(list(c.box) == boxes[c.detection] for c in got)
            sampled = engine.sample(got, rng)
            assert [(c.detection, c.text) for c in sampled] == [tuple(r) for r in official["rows"]], image.file_name
            run_rows += [
                [image.file_name, "useless placeholder", list(c.box), c.text, "useless placeholder"] for c in sampled
            ]
            images, candidates, rows = images + 1, candidates + len(got), rows + len(sampled)
        assert run_rows == run["output_rows"]
    assert (
        (images, candidates, rows)
        == (expected["counts"]["images"], expected["counts"]["candidates"], expected["counts"]["sampled_rows"])
        == (19, 739, 99)
    )


def test_generate_runs_one_stream_over_the_images_in_order(fixture):
    by_key, expected = fixture
    run = expected["runs"][0]
    images = [_image(by_key[(run["dataset"], run["split"], im["image_file"])]) for im in run["images"]]
    got = [[c.text for c in rows] for _, rows in TemplateEngine().generate(images)]
    assert got == [[text for _, text in im["rows"]] for im in run["images"]]


def test_per_stage_fates_attributes_spatial_words_and_clothes(fixture):
    by_key, expected = fixture
    engine = TemplateEngine()
    for run in expected["runs"]:
        for official in run["images"]:
            image = _image(by_key[(run["dataset"], run["split"], official["image_file"])])
            chosen = engine.selected(image)
            ranked = sorted(
                (d for d in official["detections"] if d.get("selected_rank") is not None),
                key=lambda d: d["selected_rank"],
            )
            assert [o.index for o in chosen] == [d["id"] for d in ranked]
            for obj, det in zip(chosen, ranked):
                assert (obj.attr, obj.spatial) == (det["attr"], det["spatial"])
                if obj.clothes is not None:
                    assert {k: [c.index for c in v] for k, v in obj.clothes.items()} == det["clothes"]


def test_every_constant_is_a_parameter_and_changes_the_output(fixture):
    by_key, expected = fixture
    images = [
        _image(by_key[(r["dataset"], r["split"], im["image_file"])]) for r in expected["runs"] for im in r["images"]
    ]
    base = [[c.text for c in TemplateEngine().candidates(im)] for im in images]
    for change in (
        {"topn": 1},
        {"tiny_area_ratio": 0.1},
        {"overlap_iou": 0.9},
        {"attr_conf_thresh": 0.9},
        {"spatial_spread": 400.0},
        {"top_uses_width": False},
        {"behind_ratio": 0.1},
        {"clothes_inside": 1.0},
    ):
        changed = [[c.text for c in TemplateEngine(TemplateConfig(**change)).candidates(im)] for im in images]
        assert changed != base, change
    assert TemplateConfig() == TemplateConfig(
        3, 6, 0.5, 0.3, 1 / 64, 0.4, 0.75, 0.75, 0.5, 50.0, 0.4, 0.8, True, 20211024
    )


def test_class_groups_are_the_official_lists():
    groups = ClassGroups.official()
    assert len(groups.people) == 28 and "man" in groups.people and "young man" not in groups.people
    assert (len(groups.hat), len(groups.shirt), len(groups.pants), len(groups.shoes)) == (10, 41, 14, 10)
    assert len(groups.clothes) == 67
    assert groups.slot("scarf") == "hat" and groups.slot("jeans") == "shirt" and groups.slot("boots") == "pants"
    assert len(attribute_vocabulary()) == 400 and attribute_vocabulary()[0] == "gray"
