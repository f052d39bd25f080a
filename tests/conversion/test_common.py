"""The checkpoint converter never guesses: bad, damaged or ambiguous checkpoints are one-line errors (exit status 2)
and nothing is written; what it fixes by itself (a DDP ``module.`` prefix) it says."""

import math

import pytest
import torch
from safetensors.torch import load_file

from clipvg_hf.commands.convert_checkpoint import main
from clipvg_hf.conversion.common import load_original_checkpoint

from conftest import CHECKPOINT


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad and unusual checkpoint files, built once from the fixture checkpoint."""
    root = tmp_path_factory.mktemp("checkpoints")
    official = load_original_checkpoint(CHECKPOINT)
    state = official["model"]
    (root / "empty.pth").write_bytes(b"")
    (root / "garbage.pth").write_bytes(bytes(range(256)) * 4)
    (root / "text.pth").write_text("hello\n")
    (root / "folder").mkdir()
    (root / "converted").mkdir()
    (root / "converted" / "config.json").write_text("{}")
    torch.save(state, root / "bare.pth")  # no args: the fusion head count is unknown
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "args": official["args"]}, root / "ddp.pth")
    nan = dict(state)
    nan["bbox_embed.layers.0.weight"] = torch.full_like(state["bbox_embed.layers.0.weight"], math.nan)
    torch.save({"model": nan, "args": official["args"]}, root / "nan.pth")
    return root


def _fails(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert "weights_only=False" not in err[0] and "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize(
    ("name", "extra", "message"),
    [
        ("empty.pth", [], "the file is empty (0 bytes)"),
        ("garbage.pth", [], "not a valid torch file"),
        ("text.pth", [], "not a valid torch file"),
        ("folder", [], "is a folder, not a checkpoint file"),
        ("converted", [], "already a converted model folder"),
        ("bare.pth", [], "pass --fusion_num_heads N"),
        ("bare.pth", ["--fusion_num_heads", "3"], "3 fusion heads do not divide the fusion width 64"),
        (
            "ddp.pth",
            ["--fusion_num_heads", "8"],
            "--fusion_num_heads 8 disagrees with the checkpoint's args.vl_nheads 2",
        ),
        ("nan.pth", [], "1 tensors hold NaN or infinite values, e.g. ['bbox_embed.layers.0.weight']"),
    ],
)
def test_bad_checkpoints_are_one_line_errors_and_nothing_is_written(capsys, files, tmp_path, name, extra, message):
    out = tmp_path / "out"
    assert message in _fails(capsys, ["--checkpoint", str(files / name), "--output_dir", str(out), *extra])
    assert not out.exists()


def test_output_dir_that_is_a_file_or_not_empty_is_refused(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    assert "is a file" in _fails(capsys, ["--checkpoint", str(CHECKPOINT), "--output_dir", str(tmp_path / "file")])
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "model.safetensors").write_text("old")
    assert "is not empty" in _fails(capsys, ["--checkpoint", str(CHECKPOINT), "--output_dir", str(tmp_path / "used")])
    assert (tmp_path / "used" / "model.safetensors").read_text() == "old"


def test_bare_state_dict_with_heads_and_ddp_prefix_convert_to_the_same_weights(capsys, files, converted_dir, tmp_path):
    reference = load_file(converted_dir / "model.safetensors")
    assert (
        main(
            [
                "--checkpoint",
                str(files / "bare.pth"),
                "--output_dir",
                str(tmp_path / "bare"),
                "--fusion_num_heads",
                "2",
            ]
        )
        == 0
    )
    assert main(["--checkpoint", str(files / "ddp.pth"), "--output_dir", str(tmp_path / "ddp")]) == 0
    for folder in ("bare", "ddp"):
        weights = load_file(tmp_path / folder / "model.safetensors")
        assert weights.keys() == reference.keys() and all(torch.equal(weights[k], reference[k]) for k in weights)
    assert '"fusion_num_heads": 2' in (tmp_path / "bare" / "config.json").read_text()
