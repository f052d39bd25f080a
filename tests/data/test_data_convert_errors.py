"""Split conversion never reads outside --image_root, decodes what it accepts, and reports every row it does not keep.

Each case runs the command in-process (``clipvg_hf.convert_splits.main``) on a small pack in the official layout and
checks the one-line error (exit status 2) or the report, and what was (not) written.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import PIL.Image
import pyarrow.parquet as pq
import pytest

from clipvg_hf.commands.convert_splits import main

from utils.data_factory import COCO_DIR, build_pack, coco_pseudo_row, save_split


@pytest.fixture
def pack(tmp_path):
    splits, images = build_pack(tmp_path / "pack")
    return splits, images, tmp_path / "hf"


def _args(splits, images, out, *extra):
    return [
        "--split_root",
        str(splits),
        "--image_root",
        str(images),
        "--output_dir",
        str(out),
        "--setting",
        "unsup-single",
        "--datasets",
        "unc",
        *extra,
    ]


def _fails(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def _train_rows(splits, rows):
    save_split(
        splits / "unc" / "unc_train_pseudo.pth", [coco_pseudo_row("a.jpg", [40.0, 30.0, 100.0, 100.0], "ok"), *rows]
    )


def _truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    PIL.Image.effect_noise((64, 64), 60).convert("RGB").save(buffer, "JPEG", quality=90)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # header intact: verify() would pass


BAD_ROWS = {
    "escape": (
        coco_pseudo_row("../../../outside/secret.png", [1.0, 1.0, 5.0, 5.0], "secret"),
        "leaves the image folder",
    ),
    "absolute": (coco_pseudo_row("{secret}", [1.0, 1.0, 5.0, 5.0], "secret"), "is absolute"),
    "truncated": (coco_pseudo_row("cut.jpg", [1.0, 1.0, 5.0, 5.0], "cut"), "unreadable image"),
    "zero_width": (coco_pseudo_row("a.jpg", [1.0, 1.0, 5.0, 5.0], "\u200b\u200c\u2060"), "no visible character"),
    "too_long": (coco_pseudo_row("a.jpg", [1.0, 1.0, 5.0, 5.0], " ".join(["word"] * 500)), "more than CLIP's text"),
}


def _plant(images: Path) -> Path:
    secret = images.parent / "outside" / "secret.png"
    secret.parent.mkdir()
    PIL.Image.new("RGB", (8, 8), (1, 2, 3)).save(secret)
    _truncated_jpeg(images / COCO_DIR / "cut.jpg")
    return secret


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_row_stops_conversion_naming_it_and_writes_nothing(capsys, pack, case):
    splits, images, out = pack
    secret = _plant(images)
    row, reason = BAD_ROWS[case]
    _train_rows(splits, [tuple(str(secret) if v == "{secret}" else v for v in row)])
    err = _fails(capsys, _args(splits, images, out))
    assert "unc_train_pseudo.pth: row 1:" in err and reason in err and "--rejects" in err
    assert not out.exists()


def test_with_rejects_every_bad_row_is_listed_and_no_outside_byte_is_stored(capsys, pack):
    splits, images, out = pack
    secret = _plant(images)
    rows = [tuple(str(secret) if v == "{secret}" else v for v in row) for row, _ in BAD_ROWS.values()]
    _train_rows(splits, [*rows, coco_pseudo_row("a.jpg", [40.0, 30.0, 100.0, 100.0], "ok")])  # last: row 0 again
    assert main(_args(splits, images, out, "--rejects")) == 0
    printed = capsys.readouterr().out
    rejects = sorted(
        (json.loads(line) for line in (out / "rejects" / "refcoco-unsup-single.jsonl").open()), key=lambda r: r["row"]
    )
    assert [r["row"] for r in rejects] == [1, 2, 3, 4, 5]
    assert all(reason in r["reason"] for r, (_, reason) in zip(rejects, BAD_ROWS.values(), strict=True))
    log = json.loads((out / "conversion.json").read_text())["refcoco-unsup-single"]["files"]
    train = next(f for f in log if f["split"] == "train_pseudo")
    assert (train["rows_in"], train["rows_out"], train["rejected"], train["duplicates"]) == (7, 2, 5, 1)
    assert "kept 1 duplicate rows" in printed and "unc_train_pseudo.pth (1)" in printed
    tables = [pq.read_table(p).to_pylist() for p in out.rglob("*.parquet")]
    stored = [row for table in tables for row in table]
    assert stored and not any("secret" in row["file_name"] for row in stored)
    assert secret.read_bytes() not in {row["image"]["bytes"] for row in stored}


def test_wrong_image_root_with_rejects_is_an_error_not_an_empty_dataset(capsys, pack, tmp_path):
    splits, _, out = pack
    (tmp_path / "empty").mkdir()
    err = _fails(capsys, _args(splits, tmp_path / "empty", out, "--rejects"))
    assert "none of the images of" in err and "--image_root" in err
    assert not out.exists()


def test_empty_and_misnamed_split_files(capsys, pack):
    splits, images, out = pack
    save_split(splits / "unc" / "unc_val.pth", [])
    assert "unc_val.pth: holds no rows" in _fails(capsys, _args(splits, images, out))
    save_split(splits / "unc" / "unc_val.pth", [coco_pseudo_row("a.jpg", [40.0, 30.0, 100.0, 100.0], "ok")])
    save_split(splits / "unc" / "unc_bogus.pth", [coco_pseudo_row("a.jpg", [1.0, 1.0, 5.0, 5.0], "x")] * 3)
    assert main(_args(splits, images, out, "--rejects")) == 0
    printed = capsys.readouterr().out
    log = json.loads((out / "conversion.json").read_text())["refcoco-unsup-single"]["files"]
    total_in, total_out, total_rejected = (sum(f[k] for f in log) for k in ("rows_in", "rows_out", "rejected"))
    assert total_in == total_out + total_rejected and total_rejected == 3  # the misnamed file's rows are counted
    assert "rejected file unc_bogus.pth" in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--box_tolerance", "nan"], "--box_tolerance: must be a finite number >= 0, got 'nan'"),
        (["--box_tolerance", "-1"], "--box_tolerance: must be a finite number >= 0"),
        (["--num_shards", "0"], "--num_shards: must be a positive integer, got '0'"),
    ],
)
def test_bad_numbers_are_refused_by_the_parser(capsys, pack, extra, message):
    splits, images, out = pack
    with pytest.raises(SystemExit) as exit_info:
        main(_args(splits, images, out, *extra))
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_an_error_in_a_later_dataset_writes_nothing(capsys, pack):
    splits, images, out = pack
    save_split(splits / "referit" / "referit_test.pth", [("gone.jpg", "r.pth", [1, 1, 5, 5], "missing", [])])
    err = _fails(capsys, [*_args(splits, images, out)[:-2], "--datasets", "unc", "referit"])
    assert "referit_test.pth: row 0: image not found" in err
    assert not out.exists()


@pytest.mark.parametrize("name", ["../outside/secret.png", "/etc/hostname", "a/../../outside/secret.png"])
def test_reading_with_an_image_root_never_leaves_it(tmp_path, name):
    from clipvg_hf.data import open_raw_image

    root = tmp_path / "images"
    root.mkdir()
    with pytest.raises(ValueError, match="must stay inside --image_root|is absolute"):
        open_raw_image({"bytes": None, "path": None}, name, image_root=root)
