"""The one checked loading path of every command: "not found" for a missing relative folder (never a Hub error),
missing weights and NaN / infinite weights refused in one line, naming the tensors."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from clipvg_hf import app as app_library
from clipvg_hf.commands import app, evaluate, predict
from clipvg_hf.errors import UsageError
from clipvg_hf.loading import load_model_and_processor

PHOTO = Path(app_library.EXAMPLES_DIR) / "vg1.jpg"


def _exit(capsys, main, argv) -> str:
    """Run a command that must refuse its input: exit status 2 and one line ``error: ...``; returns that line."""
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    err = capsys.readouterr().err  # datasets' progress bars may come first
    line = err.strip().splitlines()[-1]
    assert code == 2 and line.startswith("error: ") and "Traceback" not in err, err
    return line


def _edited_copy(converted_dir: Path, folder: Path, edit) -> Path:
    """A copy of the converted fixture model whose weights ``edit`` changed (in place, on the state dict)."""
    shutil.copytree(converted_dir, folder)
    weights = load_file(folder / "model.safetensors")
    edit(weights)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_a_missing_relative_model_path_is_not_found(fixture_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # runs/best looks like a Hub id ORG/NAME, but is a missing folder here
    err = _exit(capsys, predict.main, ["--model_name_or_path", "runs/best", "--image", str(PHOTO), "--text", "a"])
    assert err.startswith("error: --model_name_or_path runs/best: not found: no folder runs/best here")
    argv = ["--model_name_or_path", "runs/best", "--dataset", str(fixture_dataset)]
    argv += ["--dataset_config", "refcoco-unsup-single", "--split", "val", "--cpu"]
    assert _exit(capsys, evaluate.main, argv).startswith("error: --model_name_or_path runs/best: not found: no folder")
    assert _exit(capsys, app.main, ["--model", "runs/best"]).startswith(
        "error: --model runs/best: not found: no folder"
    )


def test_a_folder_missing_its_box_head_is_refused_naming_the_tensors(converted_dir, tmp_path, capsys):
    def drop_box_head(weights):
        for key in [k for k in weights if k.startswith("box_head.")]:
            del weights[key]

    folder = _edited_copy(converted_dir, tmp_path / "no-head", drop_box_head)
    with pytest.raises(UsageError, match=r"the weights miss 6 tensors of the CLIPVGForGrounding, e\.g\. \['box_head"):
        load_model_and_processor(folder)
    argv = ["--model_name_or_path", str(folder), "--image", str(PHOTO), "--text", "a"]
    err = _exit(capsys, predict.main, [*argv, "--output", str(tmp_path / "boxes.png")])
    assert "the weights miss 6 tensors" in err and "box_head.layers.0.bias" in err
    assert not (tmp_path / "boxes.png").exists()


def test_nan_weights_are_refused_on_load_and_nothing_is_written(converted_dir, fixture_dataset, tmp_path, capsys):
    def poison(weights):
        weights["box_head.layers.2.bias"][0] = float("nan")

    folder = _edited_copy(converted_dir, tmp_path / "nan", poison)
    output = tmp_path / "results.json"
    argv = ["--model_name_or_path", str(folder), "--dataset", str(fixture_dataset)]
    argv += ["--dataset_config", "refcoco-unsup-single", "--split", "val", "--cpu", "--output", str(output)]
    err = _exit(capsys, evaluate.main, argv)
    assert "1 weight tensors hold NaN or infinite values, e.g. ['box_head.layers.2.bias']" in err
    assert not output.exists()
    err = _exit(capsys, predict.main, ["--model_name_or_path", str(folder), "--image", str(PHOTO), "--text", "a"])
    assert "hold NaN or infinite values" in err
    assert json.loads((folder / "config.json").read_text())["model_type"] == "clip_vg"  # the folder is untouched


def test_finite_weights_whose_boxes_are_not_finite_fail_evaluation(converted_dir, fixture_dataset, tmp_path, capsys):
    def overflow(weights):  # finite, but the first box layer overflows to +-inf and the next one gives NaN
        weight = weights["box_head.layers.0.weight"]
        signs = torch.where(torch.arange(weight.numel()).view_as(weight) % 2 == 0, 1.0, -1.0)
        weights["box_head.layers.0.weight"] = 3e38 * signs

    folder = _edited_copy(converted_dir, tmp_path / "overflow", overflow)
    output = tmp_path / "results.json"
    argv = ["--model_name_or_path", str(folder), "--dataset", str(fixture_dataset)]
    argv += ["--dataset_config", "refcoco-unsup-single", "--split", "val", "--cpu", "--output", str(output)]
    err = _exit(capsys, evaluate.main, argv)
    assert "the model predicted a non-finite box (NaN or infinite)" in err and "of 'val', e.g. row_index [0" in err
    assert not output.exists()
