"""Reading official split files: safe unpickling, row validation, box conventions, train_separate order."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from clipvg_hf.boxes_clipvg import official_box
from clipvg_hf.data.splits import (
    DATASETS,
    SplitFileError,
    SplitRowError,
    load_split_file,
    parse_row,
    parse_rows,
    separate_source_files,
)

from utils.data_factory import TINY, coco_pseudo_row, save_split


def test_refcoco_box_truncates_each_number_before_adding():
    # int(10.6) + int(20.6) = 30, whereas int(10.6 + 20.6) = 31: the official loader gives 30.
    row = parse_row(coco_pseudo_row("a.jpg", [10.6, 5.9, 20.6, 7.7], "x"), 0, DATASETS["unc"], "f.pth", "template")
    assert row.bbox_official == (10, 5, 30, 12)
    assert row.bbox == pytest.approx((10.6, 5.9, 31.2, 13.6))
    assert row.ann_file is None and row.source == "template"


@pytest.mark.parametrize("key", ["referit", "flickr"])
def test_corner_formats_are_only_truncated(key):
    box = [3.9, 4.2, 50.99, 60.5]
    raw = ("r.jpg", "r.pth", box, "t", []) if key == "referit" else ("r.jpg", box, "t")
    row = parse_row(raw, 3, DATASETS[key], "f.pth", "human")
    assert row.bbox_official == (3, 4, 50, 60)
    assert row.bbox == tuple(box)
    assert row.source_row == 3


def test_official_box_matches_numpy_int_cast_for_negative_numbers():
    raw = [-0.7, 2.5, 10.2, 3.3]
    expected = np.array(raw, dtype=int)
    expected[2:] += expected[:2]
    assert official_box(raw, "xywh") == tuple(expected.tolist())


@pytest.mark.parametrize(
    "row, reason",
    [
        (("a.jpg", "p", [1, 2, 3], "t", "p"), "box must be 4 finite numbers"),
        (("a.jpg", "p", [1, 2, 3, float("nan")], "t", "p"), "box must be 4 finite numbers"),
        (("a.jpg", "p", [1, 2, 3, True], "t", "p"), "box must be 4 finite numbers"),
        (("a.jpg", "p", [1, 2, 3, 4], "   ", "p"), "empty expression"),
        (("a.jpg", "p", [1, 2, 3, 4], None, "p"), "expression must be a string"),
        (("", "p", [1, 2, 3, 4], "t", "p"), "image file name"),
        (("a.jpg", [1, 2, 3, 4], "t"), "expected 5 fields"),
        ("a.jpg", "expected a tuple"),
    ],
)
def test_malformed_rows_name_file_row_and_reason(row, reason):
    with pytest.raises(SplitRowError, match=reason) as info:
        parse_row(row, 7, DATASETS["unc"], "unc_val.pth", "human")
    assert str(info.value).startswith("unc_val.pth: row 7: ")
    assert info.value.row == 7


def test_parse_rows_collects_errors_without_dropping_positions():
    rows = [coco_pseudo_row("a.jpg", [1, 2, 3, 4], "ok"), ("bad",), coco_pseudo_row("b.jpg", [1, 2, 3, 4], "ok")]
    errors: list[SplitRowError] = []
    parsed = parse_rows(rows, DATASETS["unc"], "f.pth", "template", errors)
    assert [p is None for p in parsed] == [False, True, False]
    assert [e.row for e in errors] == [1]


def test_fixture_files_load_with_weights_only():
    rows = load_split_file(TINY / "splits" / "unc" / "unc_val.pth")
    assert len(rows) == 18 and rows[0][0] == "COCO_train2014_000000000036.jpg"


def test_numpy_boxes_are_allowlisted(tmp_path):
    path = save_split(
        tmp_path / "unc_val.pth",
        [
            ("a.jpg", "p", np.array([1.5, 2.0, 3.0, 4.0]), "t", "p"),
            ("a.jpg", "p", [np.float32(1.0), np.int64(2), 3, 4], "t", "p"),
        ],
    )
    rows = load_split_file(path)
    assert parse_row(rows[0], 0, DATASETS["unc"], "f", "human").bbox_official == (1, 2, 4, 6)
    assert parse_row(rows[1], 1, DATASETS["unc"], "f", "human").bbox_official == (1, 2, 4, 6)


class _Payload:
    """Unpickling this would run a shell command that creates a file."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_arbitrary_code_in_a_pickle_is_refused(tmp_path):
    _Payload.marker = str(tmp_path / "pwned")
    path = tmp_path / "unc_val.pth"
    torch.save([_Payload()], path)
    with pytest.raises(SplitFileError, match=r"unc_val\.pth: cannot be loaded safely .*system.*not allowlisted"):
        load_split_file(path)
    assert not (tmp_path / "pwned").exists()


def test_corrupt_and_non_list_files(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(SplitFileError, match="junk.pth: cannot be loaded safely"):
        load_split_file(tmp_path / "junk.pth")
    torch.save({"a": 1}, tmp_path / "dict.pth")
    with pytest.raises(SplitFileError, match="expected a list of rows, got dict"):
        load_split_file(tmp_path / "dict.pth")
    with pytest.raises(SplitFileError, match="file not found"):
        load_split_file(tmp_path / "missing.pth")


def test_train_separate_order_and_sources(tmp_path):
    folder = tmp_path / "train_separate"
    for name in (
        "3_unc+_train_pseudo_caption_0_5.pth",
        "10_unc+_train_pseudo_relation_0_7.pth",
        "1_unc+_train_pseudo_template_0_5.pth",
    ):
        save_split(folder / name, [])
    found = separate_source_files(folder, "unc+")
    assert [(p.name.split("_")[0], s) for p, s in found] == [("1", "template"), ("3", "caption"), ("10", "relation")]
    save_split(folder / "4_unc+_train_pseudo_other_0_5.pth", [])
    with pytest.raises(SplitFileError, match="cannot tell the pseudo-label source"):
        separate_source_files(folder, "unc+")
