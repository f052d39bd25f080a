"""The grounding CLI: `python -m clipvg_hf.predict` prints JSON boxes, draws them, and reports bad input clearly."""

import json
import os
import shlex
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import pipeline

import clipvg_hf  # noqa: F401
from clipvg_hf.commands.predict import main

from utils.bomb_images import huge_header_jpeg
from utils.parity_processing import REPO_ROOT, load_split, save_fixture_model
from utils.readme_snippets import CLI


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_fixture_model(tmp_path_factory.mktemp("clipvg_cli_model"))


@pytest.fixture(scope="module")
def photo():
    return load_split("unc/val")[0].image_path


def test_cli_prints_and_draws_the_boxes(model_dir, photo, tmp_path):
    """Runs the README command line in a fresh, offline process."""
    output = tmp_path / "boxes.png"
    command = (
        CLI.replace("\\\n", " ")
        .replace("path/to/clipvg-model", shlex.quote(str(model_dir)))
        .replace("photo.jpg", shlex.quote(str(photo)))
    )
    command = shlex.split(command.replace("boxes.png", shlex.quote(str(output))))
    assert command[:3] == ["python", "-m", "clipvg_hf.predict"]
    # the CLI process computes with this process's thread count: the same reductions, so the same boxes to the bit
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS=str(torch.get_num_threads()))
    run = subprocess.run(
        [sys.executable, *command[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    texts = ["woman holding a pink umbrella", "the umbrella"]
    assert [r["label"] for r in printed] == texts
    image = PIL.Image.open(photo).convert("RGB")
    expected = pipeline("visual-grounding", model=str(model_dir))(image, text=texts)
    for row, reference in zip(printed, expected, strict=True):
        assert row["box"] == [reference["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")]
        assert row["score"] == 1.0
    drawn = np.asarray(PIL.Image.open(output).convert("RGB")).astype(int)
    original = np.asarray(image).astype(int)
    assert drawn.shape == original.shape
    changed = np.argwhere((drawn != original).any(axis=-1))
    x1, y1, x2, y2 = printed[0]["box"]
    # the outline sits on the box edges (within the line width)
    assert changed[:, 1].min() == pytest.approx(x1, abs=5) and changed[:, 0].max() == pytest.approx(y2, abs=5)


def test_cli_falls_back_to_the_default_processor(model_dir, photo, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).symlink_to(model_dir / name)
    assert main(["--model_name_or_path", str(bare), "--image", str(photo), "--text", "the umbrella"]) == 0
    captured = capsys.readouterr()
    assert "holds no processor" in captured.err
    with_processor = main(["--model_name_or_path", str(model_dir), "--image", str(photo), "--text", "the umbrella"])
    assert with_processor == 0 and json.loads(capsys.readouterr().out) == json.loads(captured.out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model_name_or_path", "{missing}", "--image", "{photo}", "--text", "a"], "model folder not found"),
        (["--model_name_or_path", "{tmp}", "--image", "{photo}", "--text", "a"], "could not load a CLIP-VG model"),
        (["--model_name_or_path", "{model}", "--image", "{tmp}/nope.jpg", "--text", "a"], "image file not found"),
        (["--model_name_or_path", "{model}", "--image", "{tmp}/bad.jpg", "--text", "a"], "could not read image"),
        (
            ["--model_name_or_path", "{model}", "--image", "{photo}", "--text", "a", "--text", " "],
            "--text number 2 is empty",
        ),
        (
            ["--model_name_or_path", "{model}", "--image", "{photo}", "--text", "a", "--device", "banana"],
            "--device 'banana' is not a torch device",
        ),
        (
            ["--model_name_or_path", "{model}", "--image", "{photo}", "--text", "a", "--output", "{tmp}/no/dir/b.png"],
            "folder {tmp}/no/dir does not exist",
        ),
        (
            ["--model_name_or_path", "{model}", "--image", "{photo}", "--text", "a", "--output", "{tmp}"],
            "is a folder; give a file name",
        ),
        (
            ["--model_name_or_path", "{model}", "--image", "{photo}", "--text", "a", "--output", "{tmp}/boxes.xyz"],
            "unknown image format",
        ),
        (["--model_name_or_path", "{model}", "--image", "{tmp}/thin.png", "--text", "a"], "is too thin"),
        (["--model_name_or_path", "{model}", "--image", "{tmp}/bomb.jpg", "--text", "a"], "decompression bomb"),
        (
            ["--model_name_or_path", "{nan_model}", "--image", "{photo}", "--text", "a"],
            "weight tensors hold NaN or infinite values, e.g. ['box_head",
        ),
    ],
)
def test_cli_reports_bad_input(model_dir, nan_model_dir, photo, tmp_path, capsys, args, message):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    PIL.Image.new("RGB", (10000, 1)).save(tmp_path / "thin.png")
    (tmp_path / "bomb.jpg").write_bytes(huge_header_jpeg())  # 14000 x 14000 declared, a few hundred bytes
    values = {
        "missing": tmp_path / "no_model",
        "photo": photo,
        "tmp": tmp_path,
        "model": model_dir,
        "nan_model": nan_model_dir,
    }
    before = sorted(tmp_path.iterdir())
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(**values) for a in args])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (after transformers' own weight-loading progress bar, if any)
    assert exit_info.value.code == 2 and last.startswith("error: ") and err.count("error") == 1
    assert message.format(**values) in last and "Traceback" not in err
    assert capsys.readouterr().out == "" and sorted(tmp_path.iterdir()) == before  # nothing printed or written


@pytest.fixture(scope="module")
def nan_model_dir(model_dir, tmp_path_factory):
    """The fixture model with NaN box-head weights (what a broken checkpoint gives)."""
    from transformers import AutoModelForZeroShotObjectDetection

    model = AutoModelForZeroShotObjectDetection.from_pretrained(model_dir)
    with torch.no_grad():
        model.box_head.layers[-1].weight.fill_(float("nan"))
    folder = tmp_path_factory.mktemp("nan_model")
    model.save_pretrained(folder)
    return folder


def test_cli_requires_model_image_and_text(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--image", "x.jpg", "--text", "a"])
    assert exit_info.value.code == 2 and "--model_name_or_path" in capsys.readouterr().err
