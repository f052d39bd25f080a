"""The clipvg-convert-checkpoint dispatch: a CLIP-VG checkpoint goes to the CLIP-VG converter under every --family."""

import json

import pytest

from clipvg_hf.convert_checkpoint import _without_family, main

from conftest import CHECKPOINT


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


def test_family_flag_is_removed_in_both_spellings():
    assert _without_family(["--family", "hivg", "--checkpoint", "c", "--family=auto", "--x"]) == [
        "--checkpoint",
        "c",
        "--x",
    ]
