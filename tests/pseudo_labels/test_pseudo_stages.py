"""The model stages with tiny random transformers models loaded from folders (the code path of a Hub id)."""

import PIL.Image
import pytest

from clipvg_hf.pseudo_labels.attributes import AttributeClassifier
from clipvg_hf.pseudo_labels.captions import Captioner
from clipvg_hf.pseudo_labels.detections import (
    DetectedImage,
    Detector,
    ImageRecord,
    folder_images,
    load_image,
    read_detection_shard,
    read_shard_side,
    write_detection_shard,
)
from clipvg_hf.pseudo_labels.models import ModelCheckError, check_model, load_pipeline
from clipvg_hf.pseudo_labels.templates import Detection

from _pseudo_tiny_models import DETR_LABELS, build_blip, build_clip, build_detr, build_owlv2, write_images


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return {
        "detr": build_detr(root / "detr"),
        "clip": build_clip(root / "clip"),
        "blip": build_blip(root / "blip"),
        "images": write_images(root / "images", 4),
    }


def _rgb(paths):
    return [PIL.Image.open(p).convert("RGB") for p in paths]


def test_check_model_resolves_the_task_and_refuses_the_wrong_one(tiny, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    info = check_model(str(tiny["detr"]), ("object-detection", "zero-shot-object-detection"), "--detector")
    assert (info.task, info.model_type) == ("object-detection", "detr")
    assert check_model(str(tiny["blip"]), "image-to-text", "--captioner").task == "image-text-to-text"
    with pytest.raises(ModelCheckError, match=r"--detector .* is a 'clip' model, which does not serve object-det"):
        check_model(str(tiny["clip"]), ("object-detection", "zero-shot-object-detection"), "--detector")
    with pytest.raises(ModelCheckError, match=r"--captioner 'no-such-org/no-such-model': not a model id"):
        check_model("no-such-org/no-such-model", "image-to-text", "--captioner")


def test_detector_batches_clip_and_keep_the_pipelines_detections(tiny):
    info = check_model(str(tiny["detr"]), "object-detection", "--detector")
    pipe = load_pipeline(info)
    images = _rgb(tiny["images"])
    detector = Detector(pipe, info.task, threshold=0.05, max_detections=5, batch_size=3)
    got = detector(images)
    assert len(got) == len(images)
    for image, dets in zip(images, got):
        reference = pipe(image, threshold=0.05)  # one image at a time, the plain pipeline call
        clipped = []
        for r in reference:
            b = r["box"]
            box = (
                min(max(b["xmin"], 0), image.width),
                min(max(b["ymin"], 0), image.height),
                min(max(b["xmax"], 0), image.width),
                min(max(b["ymax"], 0), image.height),
            )
            if box[2] > box[0] and box[3] > box[1]:
                clipped.append((r["label"], box, r["score"]))
        best = sorted(clipped, key=lambda c: -c[2])[:5]
        assert [d.label for d in dets] == [c[0] for c in clipped if c in best]
        assert [d.box for d in dets] == [tuple(float(v) for v in c[1]) for c in clipped if c in best]
        assert [d.score for d in dets] == pytest.approx([c[2] for c in clipped if c in best], abs=1e-5)
        assert all(d.label in DETR_LABELS for d in dets) and len(dets) <= 5
    assert sum(len(d) for d in got) > len(images)  # the tiny model does detect several boxes


def test_owlv2_grouped_queries_keep_each_boxs_best_pipeline_class(tmp_path):
    info = check_model(
        str(build_owlv2(tmp_path / "owlv2")), ("object-detection", "zero-shot-object-detection"), "--detector"
    )
    assert info.task == "zero-shot-object-detection"
    pipe = load_pipeline(info)
    vocabulary = ["cat", "remote control", "dog"]
    images = [PIL.Image.new("RGB", (64, 48), (200, 30, 30)), PIL.Image.new("RGB", (40, 56), (20, 90, 200))]
    grouped = Detector(pipe, info.task, threshold=0.0, max_detections=100, vocabulary=vocabulary, batch_size=2)
    plain = Detector(pipe, info.task, threshold=0.0, max_detections=1000, vocabulary=vocabulary, grouped_queries=False)
    assert grouped.grouped and not plain.grouped
    for mine, theirs in zip(grouped(images), plain(images)):
        assert len(theirs) == len(vocabulary) * len(mine) > 0  # the pipeline reports every box once per class
        for det in mine:
            same_box = [t for t in theirs if t.box == det.box]
            best = max(same_box, key=lambda t: t.score)
            assert det.label == best.label and det.score == pytest.approx(best.score, abs=1e-5)


def test_zero_shot_detector_needs_a_vocabulary():
    with pytest.raises(ValueError, match="vocabulary"):
        Detector(None, "zero-shot-object-detection")


def test_attributes_equal_the_zero_shot_pipeline_on_each_crop(tiny):
    pipe = load_pipeline(check_model(str(tiny["clip"]), "zero-shot-image-classification", "--attribute_model"))
    words = ["red", "wooden", "striped", "young", "metal", "white"]
    classifier = AttributeClassifier(pipe, words, batch_size=2)
    images = _rgb(tiny["images"][:2])
    dets = [
        [Detection("dog", (0.0, 0.0, 40.0, 30.0), 0.9), Detection("cup", (10.0, 5.0, 50.0, 60.0), 0.8)],
        [Detection("man", (5.0, 5.0, 5.5, 30.0), 0.7), Detection("table", (3.0, 4.0, 58.0, 70.0), 0.6)],
    ]
    got = classifier(images, dets)
    assert got[1][0].attribute is None  # under a pixel wide: no crop
    for image, mine in zip(images, got):
        for det in mine:
            if det.attribute is None:
                continue
            reference = pipe(image.crop(det.box), candidate_labels=words)[0]
            assert det.attribute == reference["label"]
            assert det.attribute_score == pytest.approx(reference["score"], abs=1e-5)
            assert (det.label, det.box, det.score) in [(d.label, d.box, d.score) for ds in dets for d in ds]


def test_captioner_writes_one_caption_per_image(tiny):
    pipe = load_pipeline(check_model(str(tiny["blip"]), "image-to-text", "--captioner"))
    captions = Captioner(pipe, max_new_tokens=6, batch_size=2)(_rgb(tiny["images"][:3]))
    assert len(captions) == 3 and all(isinstance(c, str) and c for c in captions)
    single = Captioner(pipe, max_new_tokens=6, batch_size=1)(_rgb(tiny["images"][:1]))
    assert single == captions[:1]


def test_corrupt_image_is_a_reject_naming_the_file(tmp_path):
    (tmp_path / "ok.png").write_bytes(b"")
    PIL.Image.new("RGB", (8, 6)).save(tmp_path / "fine.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "notes.txt").write_text("x")
    records, others = folder_images(tmp_path)
    assert [r.file_name for r in records] == ["bad.jpg", "fine.png", "ok.png"] and others == 1
    results = [load_image(r) for r in records]
    assert results[1].image.size == (8, 6)
    for bad in (results[0], results[2]):
        assert bad.file_name in bad.reason and "cannot read image" in bad.reason


def test_detection_shard_round_trip(tmp_path):
    items = [
        DetectedImage(
            ImageRecord(3, "a.png", "/x/a.png"),
            40,
            30,
            [Detection("dog", (1.0, 2.0, 3.0, 4.0), 0.5, "brown", 0.7), Detection("cup", (0.0, 1.5, 9.0, 9.5), 0.25)],
            "a dog",
        ),
        DetectedImage(ImageRecord(4, "b.png", None, b"bytes"), 8, 6, [], None),
    ]
    path = tmp_path / "shard-00000.parquet"
    write_detection_shard(path, items, [], {"k": 1})
    back = list(read_detection_shard(path))
    assert [(b.record, b.width, b.height, b.detections, b.caption) for b in back] == [
        (i.record, i.width, i.height, i.detections, i.caption) for i in items
    ]
    assert read_shard_side(path) == {"meta": {"k": 1}, "rejects": []}
    assert back[0].for_templates().attr_detections == [items[0].detections[0]]
