"""``clipvg-pseudo-label`` on bad input: each case feeds it in-process and checks the one-line error (exit status 2)
or the reported reject, and that nothing was written: a decompression bomb, a model of another task, numbers out of
range, links leaving ``--image_dir``, a folder of unreadable images, ``--labels_only`` after the images were deleted.
"""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from clipvg_hf.commands.pseudo_label import NUMBER_RANGES, build_parser, main, pseudo_label
from clipvg_hf.pseudo_labels.models import ModelCheckError, check_model

from _pseudo_tiny_models import build_blip, build_clip, build_detr, write_images
from utils.bomb_images import huge_header_jpeg


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("pseudo_safety_models")
    return {"detr": build_detr(root / "detr"), "clip": build_clip(root / "clip"), "blip": build_blip(root / "blip")}


def _args(models, images, out, *extra):
    return [
        "--image_dir",
        str(images),
        "--output_dir",
        str(out),
        "--detector",
        str(models["detr"]),
        "--detection_threshold",
        "0.05",
        "--name",
        "photos",
        "--cpu",
        *extra,
    ]


def _refused(capsys, argv, before_work: bool = True) -> str:
    """The one line ``error: ...`` of a refused run (exit status 2, no traceback); ``before_work``: nothing else was
    printed (no progress bar: no model was loaded, no image read)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "Traceback" not in err and err.count("error: ") == 1, err
    last = err.splitlines()[-1]
    assert last.startswith("error: ") and (len(err.splitlines()) == 1 or not before_work), err
    return last


def _rejects(out):
    return {r["file_name"]: r["reason"] for r in map(json.loads, (out / "rejects.jsonl").read_text().splitlines())}


def _stored_names(out):
    names = set()
    for path in (out / "photos-unsup-multi").glob("*.parquet"):
        names |= set(pq.read_table(path, columns=["file_name"]).column("file_name").to_pylist())
    return names


def _tree(folder):
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


# -- a decompression bomb -------------------------------------------------------------------------------------------
def test_a_jpeg_bomb_in_the_folder_is_a_reported_reject_never_decoded(models, tmp_path):
    """A 14000 x 14000 JPEG of a few hundred bytes (588 MB of pixels): refused from its header by the pixel limit,
    listed with the reason; the other images are labelled."""
    images = tmp_path / "photos"
    write_images(images, 3)
    (images / "bomb.jpg").write_bytes(huge_header_jpeg())
    out = tmp_path / "out"
    summary = pseudo_label(_args(models, images, out))
    assert summary["rejected"] == 1 and summary["images_in"] == 3
    reason = _rejects(out)["bomb.jpg"]
    assert "DecompressionBombError" in reason and "14000x14000" in reason
    assert "bomb.jpg" not in _stored_names(out)


# -- a model of another task ----------------------------------------------------------------------------------------
def test_a_captioning_checkpoint_is_not_an_attribute_model(models, tmp_path, capsys):
    """BLIP's captioning checkpoint shares ``model_type`` "blip" with the zero-shot classifier BlipModel, whose text
    encoder it lacks: refused before any work, naming the model and the task it has."""
    with pytest.raises(ModelCheckError) as error:
        check_model(str(models["blip"]), "zero-shot-image-classification", "--attribute_model")
    message = str(error.value)
    assert f"--attribute_model {str(models['blip'])!r} is not a zero-shot-image-classification model" in message
    assert "BlipForConditionalGeneration (image-text-to-text)" in message and "weights random" in message
    images = tmp_path / "photos"
    write_images(images, 2)
    err = _refused(capsys, _args(models, images, tmp_path / "out", "--attribute_model", str(models["blip"])))
    assert "BlipForConditionalGeneration (image-text-to-text)" in err
    assert not (tmp_path / "out").exists()
    # the right checkpoints of each task pass the same check
    assert check_model(str(models["clip"]), "zero-shot-image-classification", "--attribute_model").model_type == "clip"
    assert check_model(str(models["blip"]), "image-to-text", "--captioner").task == "image-text-to-text"


# -- numbers ------------------------------------------------------------------------------------------------------
BAD_NUMBERS = [
    ("--detection_threshold", "1.5", "--detection_threshold must be at most 1, got 1.5"),
    ("--detection_threshold", "nan", "--detection_threshold must be a finite number, got nan"),
    ("--detection_threshold", "inf", "--detection_threshold must be a finite number, got inf"),
    ("--detection_threshold", "-0.1", "--detection_threshold must be at least 0"),
    ("--max_detections", "-1", "--max_detections must be at least 1, got -1"),
    ("--max_detections", "0", "--max_detections must be at least 1, got 0"),
    ("--caption_query", "-1", "--caption_query must be at least 1, got -1"),
    ("--caption_max_new_tokens", "0", "--caption_max_new_tokens must be at least 1, got 0"),
    ("--each_image_query", "-1", "--each_image_query must be at least 1, got -1"),
    ("--topn", "0", "--topn must be at least 1, got 0"),
    ("--shard_size", "0", "--shard_size must be at least 1, got 0"),
    ("--batch_size", "-2", "--batch_size must be at least 1, got -2"),
    ("--seed", "-5", "--seed must be at least 0, got -5"),
    ("--overlap_iou", "nan", "--overlap_iou must be a finite number, got nan"),
    ("--attr_conf_thresh", "2", "--attr_conf_thresh must be at most 1, got 2.0"),
    ("--tiny_area_ratio", "-1", "--tiny_area_ratio must be at least 0"),
    ("--spatial_spread", "inf", "--spatial_spread must be a finite number, got inf"),
    ("--front_ratio", "1.01", "--front_ratio must be at most 1"),
]


@pytest.mark.parametrize(("flag", "value", "message"), BAD_NUMBERS, ids=[f"{f}={v}" for f, v, _ in BAD_NUMBERS])
def test_numbers_out_of_range_are_refused_before_any_work(models, tmp_path, capsys, flag, value, message):
    images = tmp_path / "photos"
    write_images(images, 1)
    assert message in _refused(capsys, _args(models, images, tmp_path / "out", flag, value))
    assert not (tmp_path / "out").exists()
    # also with --labels_only, which reads no image and loads no model
    assert message in _refused(capsys, ["--labels_only", "--output_dir", str(tmp_path / "out"), flag, value])


def test_every_number_the_command_takes_has_a_range():
    numeric = {a.dest for a in build_parser()._actions if a.type in (int, float)}
    assert numeric == set(NUMBER_RANGES)


# -- links, unreadable folders, deleted images ------------------------------------------------------------------------
def test_links_leaving_the_image_folder_are_rejects_never_read(models, tmp_path):
    images = tmp_path / "photos"
    first, second = write_images(images, 2)
    outside = tmp_path / "private"
    write_images(outside, 1, seed=7)
    (images / "escape.png").symlink_to(outside / "img_000.jpg")
    (images / "alias.png").symlink_to(second)  # a link inside the folder is read as usual
    out = tmp_path / "out"
    summary = pseudo_label(_args(models, images, out))
    assert summary["images_in"] == 3 and summary["rejected"] == 1
    reason = _rejects(out)["escape.png"]
    assert "is a link leaving --image_dir" in reason and "not read" in reason
    assert "escape.png" not in _stored_names(out)
    secret = (outside / "img_000.jpg").read_bytes()
    assert not any(secret in p.read_bytes() for p in out.rglob("*") if p.is_file())


def test_a_folder_of_unreadable_images_is_an_error_not_an_empty_dataset(models, tmp_path, capsys):
    images = tmp_path / "photos"
    images.mkdir()
    (images / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (images / "b.png").write_text("not a png")
    out = tmp_path / "out"
    err = _refused(capsys, _args(models, images, out), before_work=False)  # known once every image was tried
    assert "none of the 2 input images could be read (first: cannot read image 'a.jpg'" in err
    assert not list(out.glob("*-unsup-*")) and not (out / "README.md").exists()


def test_labels_only_after_the_images_were_deleted_is_refused_up_front(models, tmp_path, capsys):
    images = tmp_path / "photos"
    write_images(images, 3)
    out = tmp_path / "out"
    main(_args(models, images, out))
    capsys.readouterr()
    before = _tree(out)
    (images / "img_001.png").unlink()
    err = _refused(capsys, ["--labels_only", "--output_dir", str(out), "--topn", "1"])
    assert "1 image(s) the detections in" in err and "'img_001.png'" in err and "are gone" in err
    assert _tree(out) == before
    shutil.rmtree(images)
    err = _refused(capsys, ["--labels_only", "--output_dir", str(out)])
    assert "3 image(s)" in err
