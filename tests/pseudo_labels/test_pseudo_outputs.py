"""``clipvg-pseudo-label`` and its output folder: a name is a name, another dataset's folder is refused, a rerun
checks the images' content (not their names), and the labels stage is staged (a killed run leaves the old dataset).

Each refusal is one line ``error: ...`` with exit status 2, before any model is loaded, and nothing is written.
"""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import PIL.Image
import pyarrow.parquet as pq
import pytest
from test_pseudo_cli import _args, _expressions
from test_pseudo_cli import setup as setup  # the fixture: image folder and tiny models

from clipvg_hf.commands.convert_splits import main as convert_main
from clipvg_hf.commands.pseudo_label import main, pseudo_label

from _pseudo_tiny_models import write_images
from utils.data_factory import build_pack
from utils.paths import REPO_ROOT

CONFIGS = ("photos-unsup-single", "photos-unsup-multi")


def _snapshot(folder):
    """Relative path -> SHA-256 of every file under ``folder`` (links not followed)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _refused(capsys, argv):
    with pytest.raises(SystemExit) as err:
        main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert err.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def _with_input(setup, images, out, *extra):
    args = _args(setup, out, *extra)
    args[args.index("--image_dir") + 1] = str(images)
    return args


def _images(out, config="photos-unsup-multi", split="train_pseudo"):
    """file name -> (width, height, embedded bytes) of a generated split."""
    found = {}
    for path in sorted((out / config).glob(f"{split}-*.parquet")):
        for row in pq.read_table(path, columns=["file_name", "width", "height", "image"]).to_pylist():
            found[row["file_name"]] = (row["width"], row["height"], row["image"]["bytes"])
    return found


# -- item: a name is a name -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "x*", "/tmp/x", "a\\b", ""])
def test_a_name_that_is_a_path_is_refused(setup, tmp_path, capsys, name):
    out = tmp_path / "a" / "b" / "out"
    above = tmp_path / "a" / "x-unsup-single"  # where ../../x would have written, with a shard to delete
    above.mkdir(parents=True)
    (above / "train_pseudo-00000-of-00001.parquet").write_bytes(b"someone's shard")
    before = _snapshot(tmp_path)
    line = _refused(capsys, _args(setup, out, "--name", name))
    assert line.startswith(f"error: --name {name!r}: not a name")
    assert _snapshot(tmp_path) == before and not out.exists()


def test_a_default_name_that_is_not_a_name_asks_for_one(setup, tmp_path, capsys):
    images = tmp_path / "my photos"
    write_images(images, 2)
    line = _refused(capsys, _with_input(setup, images, tmp_path / "out"))
    assert line.startswith("error: --name (default, from --image_dir) 'my photos': not a name")
    assert line.endswith("; give --name") and not (tmp_path / "out").exists()


# -- item: an output folder holding another dataset -------------------------------------------------------------
def test_a_converted_dataset_is_not_an_output_folder(setup, tmp_path, capsys):
    splits, image_root = build_pack(tmp_path / "pack")
    converted = tmp_path / "hf"
    convert_main(
        [
            *("--split_root", str(splits), "--image_root", str(image_root), "--output_dir", str(converted)),
            *("--setting", "unsup-single", "--datasets", "unc"),
        ]
    )
    capsys.readouterr()
    before = _snapshot(converted)
    line = _refused(capsys, _args(setup, converted, "--name", "refcoco"))
    assert line.startswith(f"error: --output_dir {converted} holds a converted dataset (conversion.json")
    assert _snapshot(converted) == before


def test_an_output_dir_that_is_a_file_is_refused_before_any_work(setup, tmp_path, capsys):
    file = tmp_path / "out"
    file.write_text("a file")
    line = _refused(capsys, _args(setup, file))
    assert line == f"error: --output_dir {file} is a file, not a folder" and file.read_text() == "a file"


# -- item: a replaced image -------------------------------------------------------------------------------------
def _replace(path, seed, size):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    PIL.Image.fromarray(pixels).save(path)


def test_a_rerun_detects_a_replaced_image_again_and_equals_a_fresh_run(setup, tmp_path, capsys):
    images = tmp_path / "photos"
    write_images(images, 6)
    out = tmp_path / "out"
    main(_with_input(setup, images, out))
    shards = sorted((out / "detections").glob("shard-*.parquet"))
    assert len(shards) == 2
    kept_stamp = shards[1].stat().st_mtime_ns
    _replace(images / "img_001.png", 7, (96, 64))  # was 60x80: same name, other size and pixels
    capsys.readouterr()
    main(_with_input(setup, images, out))
    err = capsys.readouterr().err
    assert "shard-00000.parquet: image 'img_001.png' changed since (size " in err
    assert "detecting the shard again" in err and "shard-00001" not in err
    assert shards[1].stat().st_mtime_ns == kept_stamp  # an unchanged shard is still skipped
    fresh = tmp_path / "fresh"
    main(_with_input(setup, images, fresh))
    for config in CONFIGS:
        assert _expressions(out, config) == _expressions(fresh, config)
    embedded = _images(out)
    assert embedded == _images(fresh)
    if "img_001.png" in embedded:
        assert embedded["img_001.png"] == (96, 64, (images / "img_001.png").read_bytes())


def test_labels_only_refuses_an_image_changed_since_its_detections(setup, tmp_path, capsys):
    images = tmp_path / "photos"
    write_images(images, 6)
    out = tmp_path / "out"
    main(_with_input(setup, images, out))
    before = _snapshot(out)
    for i, path in enumerate(sorted(images.iterdir())):  # whichever image has labels: every one changes
        _replace(path, 100 + i, PIL.Image.open(path).size)  # same size in pixels, other bytes
    capsys.readouterr()
    line = _refused(capsys, ["--labels_only", "--output_dir", str(out)])
    assert "changed since its detections" in line and "run without --labels_only to detect it again" in line
    assert _snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_labels_only_keeps_the_recorded_name_and_refuses_another(setup, tmp_path, capsys):
    images = tmp_path / "photos"
    write_images(images, 2)
    out = tmp_path / "out"
    main(_with_input(setup, images, out))
    main(["--labels_only", "--output_dir", str(out), "--topn", "1"])  # default: the name recorded, not "out"
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(("-single", "-multi"))) == sorted(CONFIGS)
    before = _snapshot(out)
    capsys.readouterr()
    line = _refused(capsys, ["--labels_only", "--output_dir", str(out), "--name", "other"])
    assert line.startswith("error: --name 'other': --output_dir") and "named 'photos'" in line
    assert _snapshot(out) == before


# -- item: the labels stage killed midway ----------------------------------------------------------------------
# The labels stage, killed (SIGKILL) right after its first config is complete.
KILLED_AFTER_FIRST_CONFIG = textwrap.dedent(
    """
    import os, signal, sys
    import clipvg_hf.pseudo_labels.writer as writer
    from clipvg_hf.commands.pseudo_label import main

    finalise = writer._finalise

    def finalise_then_die(*args, **kwargs):
        finalise(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    writer._finalise = finalise_then_die
    main(sys.argv[1:])
    """
)


def test_a_labels_stage_killed_between_configs_leaves_the_old_dataset(setup, tmp_path):
    images = tmp_path / "photos"
    write_images(images, 6)
    out = tmp_path / "out"
    main(_with_input(setup, images, out, "--topn", "1"))
    before = _snapshot(out)
    argv = ["--labels_only", "--output_dir", str(out), "--relations", "none"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_FIRST_CONFIG, *argv], env=env, capture_output=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert _snapshot(out) == before  # neither config nor the card of the new labels is in place
    summary = pseudo_label(argv)  # the rerun completes and removes the dead run's staging folder
    assert summary["expressions"]["relation"] == 0 and _expressions(out, "photos-unsup-multi", "train_relation") == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    shutil.rmtree(out)
