"""The clipvg-convert-checkpoint dispatch: a CLIP-VG checkpoint goes to the CLIP-VG converter under every --family."""

import json

import pytest
import torch

from clipvg_hf.commands.convert_checkpoint import main
from clipvg_hf.conversion.common import load_original_checkpoint
from clipvg_hf.convert_hivg_checkpoint import main as hivg_main

from conftest import CHECKPOINT
from utils.paths import HIVG_TINY_DIR

HIVG_CHECKPOINT = HIVG_TINY_DIR / "checkpoint.pth"


@pytest.mark.parametrize("family", [[], ["--family", "auto"], ["--family=clipvg"]])
def test_clipvg_checkpoint_is_converted_as_clipvg(tmp_path, family):
    out = tmp_path / "out"
    assert main([*family, "--checkpoint", str(CHECKPOINT), "--output_dir", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["model_type"] == "clip_vg"


def test_forcing_hivg_on_a_clipvg_checkpoint_is_a_one_line_error(tmp_path, capsys):
    try:
        code = main(["--family", "hivg", "--checkpoint", str(CHECKPOINT), "--output_dir", str(tmp_path / "o")])
    except SystemExit as exit_info:
        code = exit_info.code
    assert code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def _exit_status_of(command, argv):
    try:
        return command(argv)
    except SystemExit as exit_info:
        return exit_info.code


def _exit_status(argv):
    return _exit_status_of(main, argv)


def test_help_documents_both_families(capsys):
    assert _exit_status(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--family", "--fusion_num_heads", "--trainable_clip", "HiVG checkpoints only", "--merge_lora"):
        assert flag in text, flag
    assert "--clip_config" in text and "--bridge_text_source" in text and "--bridge_batch_mixing" in text


@pytest.mark.parametrize("family", ["clipvg", "hivg"])
def test_a_non_empty_output_dir_is_refused_for_both_families(tmp_path, capsys, family):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    checkpoint = CHECKPOINT if family == "clipvg" else HIVG_CHECKPOINT
    assert _exit_status(["--checkpoint", str(checkpoint), "--output_dir", str(out)]) == 2
    assert capsys.readouterr().err == f"error: --output_dir {out} is not empty; choose a new folder\n"
    # the HiVG module's own command goes through the same check (it used to write into such a folder)
    assert _exit_status_of(hivg_main, ["--checkpoint", str(HIVG_CHECKPOINT), "--output_dir", str(out)]) == 2
    assert capsys.readouterr().err == f"error: --output_dir {out} is not empty; choose a new folder\n"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("family", ["clipvg", "hivg"])
def test_nan_or_infinite_weights_are_refused_for_both_families(tmp_path, capsys, family):
    source = CHECKPOINT if family == "clipvg" else HIVG_CHECKPOINT
    checkpoint = load_original_checkpoint(source)
    key = next(k for k in checkpoint["model"] if k.endswith("bbox_embed.layers.0.weight"))
    checkpoint["model"][key][0, 0] = float("nan") if family == "hivg" else float("inf")
    broken = tmp_path / "broken.pth"
    torch.save(checkpoint, broken)
    heads = tmp_path / "clip_config.json"
    heads.write_text(
        json.dumps({"text_config": {"num_attention_heads": 2}, "vision_config": {"num_attention_heads": 2}})
    )
    out = tmp_path / "out"
    extra = ["--clip_config", str(heads)] if family == "hivg" else []
    assert _exit_status(["--checkpoint", str(broken), "--output_dir", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {broken}: 1 tensors hold NaN or infinite values, e.g. ['{key}']")
    assert err.count("\n") == 1 and not out.exists()


def test_hivg_only_flags_are_refused_for_a_clipvg_checkpoint(tmp_path, capsys):
    out = tmp_path / "out"
    assert _exit_status(["--checkpoint", str(CHECKPOINT), "--output_dir", str(out), "--merge_lora"]) == 2
    err = capsys.readouterr().err
    assert "--merge_lora applies only to HiVG checkpoints" in err and "converted as CLIP-VG" in err
    assert not out.exists()
