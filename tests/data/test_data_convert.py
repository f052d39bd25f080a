"""Converting official split packs to parquet configs: parity with the official loader, schema, errors, loading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import PIL.Image
import pyarrow.parquet as pq
import pytest
import torch
from datasets import load_dataset
from huggingface_hub import DatasetCard
from safetensors.torch import load_file

from clipvg_hf.data import CLIPVGEvalTransform, ConversionError, GroundingDataset, convert_pack, format_summary

from utils.data_factory import (
    COCO_DIR,
    TINY,
    build_multi_source,
    build_pack,
    coco_pseudo_row,
    draw_box_image,
    save_split,
)
from utils.parity_processing import fixture_pixel_tolerance
from utils.paths import REPO_ROOT

REPO = REPO_ROOT
FIXTURE_SPLITS = {  # (config, split) -> key in the fixture
    ("refcoco-unsup-single", "val"): "unc/val",
    ("refcoco-unsup-single", "testA"): "unc/testA",
    ("refcoco-unsup-single", "train_pseudo"): "unc/train_pseudo",
    ("referit-unsup-single", "test"): "referit/test",
    ("flickr30k-unsup-single", "test"): "flickr/test",
}


@pytest.fixture(scope="module")
def fixture_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("fixture_hf")
    reports, rejects = convert_pack(TINY / "splits", TINY / "image_data", out, "unsup-single")
    return out, reports, rejects


def _load(folder: Path, config: str, split: str, cache: Path):
    return load_dataset(str(folder), config, split=split, cache_dir=str(cache))


def test_fixture_summary_counts_every_row(fixture_output):
    _, reports, rejects = fixture_output
    counts = {(r.config, r.split): (r.rows_in, r.rows_out, r.rejected, r.images, r.shards) for r in reports}
    assert counts == {
        ("refcoco-unsup-single", "train_pseudo"): (20, 20, 0, 13, 8),
        ("refcoco-unsup-single", "val"): (18, 18, 0, 13, 8),
        ("refcoco-unsup-single", "testA"): (6, 6, 0, 3, 3),
        ("referit-unsup-single", "test"): (4, 4, 0, 3, 3),
        ("flickr30k-unsup-single", "test"): (4, 4, 0, 3, 3),
    }
    assert rejects == []
    table = format_summary(reports)
    assert "unc_train_pseudo.pth" in table and table.splitlines()[-1].split()[:3] == ["total", "52", "52"]


def test_fixture_eval_targets_equal_the_official_loader(fixture_output, tmp_path):
    folder, _, _ = fixture_output
    expected = load_file(TINY / "expected.safetensors")
    meta = json.loads((TINY / "expected.json").read_text())["splits"]
    transform = CLIPVGEvalTransform()
    for (config, split), key in FIXTURE_SPLITS.items():
        view = GroundingDataset(_load(folder, config, split, tmp_path), transform)
        items = [view[i] for i in range(len(view))]
        assert [item["text"] for item in items] == meta[key]["phrases"], key  # same row order
        assert [item["row_index"] for item in items] == list(range(len(items)))
        labels = torch.stack([item["labels"] for item in items])
        torch.testing.assert_close(labels, expected[f"{key}/target_boxes"], atol=1e-6, rtol=0, msg=key)
        if key == "unc/val":
            pad = torch.stack([1 - item["pixel_mask"] for item in items])
            assert torch.equal(pad, expected[f"{key}/pad_mask"].long())
            pixels = torch.stack([item["pixel_values"] for item in items])
            tolerance = fixture_pixel_tolerance()  # the fixture was made with Pillow 13
            torch.testing.assert_close(pixels, expected[f"{key}/pixel_values"].float(), atol=tolerance, rtol=0)


def test_images_are_stored_once_per_split_with_original_bytes(fixture_output):
    folder, _, _ = fixture_output
    files = sorted((folder / "refcoco-unsup-single").glob("val-*.parquet"))
    table = pq.read_table(files)
    names = table.column("file_name").to_pylist()
    assert len(names) == len(set(names)) == 13
    assert sum(len(e) for e in table.column("expressions").to_pylist()) == 18
    first = table.slice(0, 1).to_pylist()[0]
    assert first["image"]["bytes"] == (TINY / "image_data" / COCO_DIR / first["file_name"]).read_bytes()
    assert (first["width"], first["height"]) == PIL.Image.open(
        TINY / "image_data" / COCO_DIR / first["file_name"]
    ).size
    assert all(pq.ParquetFile(f).metadata.num_rows > 0 for f in files)


def test_load_dataset_in_a_fresh_process_including_streaming(fixture_output, tmp_path):
    folder, _, _ = fixture_output
    script = textwrap.dedent(
        """
        import json, sys
        from datasets import get_dataset_config_names, load_dataset
        folder, cache = sys.argv[1], sys.argv[2]
        out = {"configs": sorted(get_dataset_config_names(folder))}
        ds = load_dataset(folder, "refcoco-unsup-single", cache_dir=cache)
        out["splits"] = {k: len(v) for k, v in ds.items()}
        out["features"] = sorted(ds["val"].features)
        out["image_type"] = type(ds["val"].features["image"]).__name__
        out["bbox"] = ds["val"][0]["expressions"][0]["bbox_official"]
        stream = load_dataset(folder, "refcoco-unsup-single", split="train_pseudo", streaming=True)
        out["n_shards"] = stream.num_shards
        rows = list(stream)
        out["stream_rows"] = len(rows)
        out["stream_expressions"] = sum(len(r["expressions"]) for r in rows)
        out["stream_image_size"] = list(rows[0]["image"].size)
        print(json.dumps(out))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["configs"] == ["flickr30k-unsup-single", "refcoco-unsup-single", "referit-unsup-single"]
    assert out["splits"] == {"train_pseudo": 13, "val": 13, "testA": 3}
    assert out["features"] == ["expressions", "file_name", "height", "image", "width"]
    assert out["image_type"] == "Image"
    assert out["bbox"] == [95, 178, 345, 639]  # int(95.3), int(178.9), 95 + int(250.4), 178 + int(461.1)
    assert out["n_shards"] == 8
    assert out["stream_rows"] == 13 and out["stream_expressions"] == 20
    assert out["stream_image_size"] == [481, 640]


def test_dataset_card_lists_configs_and_documents_the_schema(fixture_output):
    folder, _, _ = fixture_output
    card = (folder / "README.md").read_text()
    configs = {c["config_name"]: c["data_files"] for c in DatasetCard.load(folder / "README.md").data.configs}
    assert {"split": "train_pseudo", "path": "refcoco-unsup-single/train_pseudo-*.parquet"} in configs[
        "refcoco-unsup-single"
    ]
    assert "| refcoco-unsup-single | val | 18 | 13 |" in card
    assert "bbox_official" in card and "x2 = int(x) + int(w)" in card


def test_small_pack_schema_sources_and_path_mode(tmp_path):
    splits, images = build_pack(tmp_path / "pack")
    out = tmp_path / "hf"
    convert_pack(splits, images, out, "unsup-single", embed_images=False, num_shards=8)
    ds = _load(out, "refcoco-unsup-single", "train_pseudo", tmp_path / "cache")
    rows = ds.cast_column("image", type(ds.features["image"])(decode=False))
    assert rows[0]["image"]["bytes"] is None
    assert rows[0]["image"]["path"] == str((images / COCO_DIR / "a.jpg").resolve())
    view = GroundingDataset(ds)
    assert len(view) == 4
    item = view[0]
    assert item["text"] == "white square" and item["source"] == "template" and item["image"].size == (320, 240)
    assert item["box"] == [40, 30, 140, 130]
    exact = GroundingDataset(ds, box_key="bbox")[0]["box"]
    assert exact == pytest.approx([40.7, 30.2, 141.3, 131.1])
    val = _load(out, "refcoco-unsup-single", "val", tmp_path / "cache")
    expressions = [e for row in val for e in row["expressions"]]
    assert {e["source"] for e in expressions} == {"human"} and {e["ann_file"] for e in expressions} == {
        "1.pth",
        "2.pth",
    }
    assert [len(list((out / "refcoco-unsup-single").glob(f"{s}-*.parquet"))) for s in ("train_pseudo", "val")] == [
        3,
        2,
    ]


def test_multi_source_train_separate(tmp_path):
    splits, images = build_pack(tmp_path / "pack")
    merged = build_multi_source(splits)
    out = tmp_path / "hf"
    reports, _ = convert_pack(splits, images, out, "unsup-multi", datasets=["unc"])
    train = [r for r in reports if r.split == "train_pseudo"]
    assert [(r.file.split("_")[0], r.rows_in, r.rows_out) for r in train] == [("1", 2, 2), ("2", 1, 1), ("3", 2, 2)]
    assert all("equals train_separate" in r.note for r in train)
    view = GroundingDataset(_load(out, "refcoco-unsup-multi", "train_pseudo", tmp_path / "cache"))
    items = [view[i] for i in range(len(view))]
    assert [i["text"] for i in items] == [row[3].lower() for row in merged]
    assert [i["source"] for i in items] == ["template", "template", "relation", "caption", "caption"]
    captions = GroundingDataset(view.split, sources=["caption"])
    assert [captions[i]["row_index"] for i in range(len(captions))] == [3, 4]
    # a merged file that is not the concatenation is an error naming the first differing row
    save_split(splits / "unc" / "unc_train_pseudo.pth", merged[:2] + merged[3:] + merged[2:3])
    with pytest.raises(ConversionError, match=r"unc_train_pseudo\.pth: row 2: differs from the concatenation"):
        convert_pack(splits, images, out, "unsup-multi", datasets=["unc"])


def test_bad_rows_raise_naming_file_row_and_reason_or_go_to_rejects(tmp_path):
    splits, images = build_pack(tmp_path / "pack")
    draw_box_image(images / COCO_DIR / "broken.jpg", (10, 10))
    (images / COCO_DIR / "broken.jpg").write_bytes(b"not an image")
    bad = [
        coco_pseudo_row("a.jpg", [40.0, 30.0, 100.0, 100.0], "fine"),
        coco_pseudo_row("missing.jpg", [1.0, 1.0, 5.0, 5.0], "no such image"),
        coco_pseudo_row("a.jpg", [300.0, 200.0, 100.0, 100.0], "runs off the image"),
        coco_pseudo_row("a.jpg", [10.0, 10.0, 0.9, 20.0], "no width after truncation"),
        coco_pseudo_row("a.jpg", [10.0, 10.0, 5.0, 5.0], ""),
        ("a.jpg", [1, 2, 3, 4], "three fields"),
        coco_pseudo_row("broken.jpg", [1.0, 1.0, 5.0, 5.0], "corrupt image"),
    ]
    save_split(splits / "unc" / "unc_train_pseudo.pth", bad)
    with pytest.raises(ConversionError, match=r"unc_train_pseudo\.pth: row 4: empty expression"):
        convert_pack(splits, images, tmp_path / "hf", "unsup-single", datasets=["unc"])
    save_split(splits / "unc" / "unc_train_pseudo.pth", bad[:4])
    with pytest.raises(ConversionError, match=r"unc_train_pseudo\.pth: row 1: image not found: .*missing\.jpg"):
        convert_pack(splits, images, tmp_path / "hf", "unsup-single", datasets=["unc"])
    save_split(splits / "unc" / "unc_train_pseudo.pth", bad)
    reports, rejects = convert_pack(
        splits, images, tmp_path / "hf", "unsup-single", datasets=["unc"], collect_rejects=True
    )
    report = next(r for r in reports if r.split == "train_pseudo")
    assert (report.rows_in, report.rows_out, report.rejected) == (7, 1, 6)
    reasons = {r.row: r.reason for r in rejects}
    assert set(reasons) == {1, 2, 3, 4, 5, 6}
    assert "image not found" in reasons[1] and "outside the 320x240 image" in reasons[2]
    assert "no area" in reasons[3] and reasons[4] == "empty expression"
    assert "expected 5 fields" in reasons[5] and "unreadable image" in reasons[6]
    written = [json.loads(line) for line in (tmp_path / "hf" / "rejects" / "refcoco-unsup-single.jsonl").open()]
    assert sorted(r["row"] for r in written) == [1, 2, 3, 4, 5, 6] and written[0]["file"] == "unc_train_pseudo.pth"


def test_unknown_dataset_and_split_files(tmp_path):
    splits, images = build_pack(tmp_path / "pack")
    save_split(splits / "unc" / "unc_test.pth", [])  # unc has testA/testB but no test split
    with pytest.raises(ConversionError, match=r"unc_test\.pth: unknown split 'test' for dataset 'unc'"):
        convert_pack(splits, images, tmp_path / "hf", "unsup-single", datasets=["unc"])
    (splits / "unc" / "unc_test.pth").unlink()
    (splits / "coco").mkdir()
    with pytest.raises(ConversionError, match=r"unknown dataset folder\(s\) \['coco'\]"):
        convert_pack(splits, images, tmp_path / "hf", "unsup-single")
    with pytest.raises(ValueError, match="unknown dataset 'coco'"):
        convert_pack(splits, images, tmp_path / "hf", "unsup-single", datasets=["coco"])


def test_view_decodes_like_the_official_loader_without_exif_rotation(tmp_path):
    splits, images = build_pack(tmp_path / "pack")
    path = images / COCO_DIR / "rotated.jpg"
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    PIL.Image.new("RGB", (120, 60), (200, 10, 10)).save(path, exif=exif)
    save_split(splits / "unc" / "unc_train_pseudo.pth", [coco_pseudo_row("rotated.jpg", [0.0, 0.0, 100.0, 50.0], "x")])
    convert_pack(splits, images, tmp_path / "hf", "unsup-single", datasets=["unc"])
    ds = _load(tmp_path / "hf", "refcoco-unsup-single", "train_pseudo", tmp_path / "cache")
    assert ds[0]["image"].size == (60, 120)  # datasets' own decoding applies EXIF rotation ...
    assert GroundingDataset(ds)[0]["image"].size == (120, 60)  # ... the view, like the official loader, does not


def _cli_main():
    from clipvg_hf.commands.convert_splits import main

    return main


def test_cli_prints_the_summary_and_fails_cleanly(tmp_path, capsys):
    splits, images = build_pack(tmp_path / "pack")
    args = [
        "--split_root",
        str(splits),
        "--image_root",
        str(images),
        "--output_dir",
        str(tmp_path / "hf"),
        "--setting",
        "unsup-single",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ok = subprocess.run(
        [sys.executable, str(REPO / "data_scripts" / "convert_splits.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )  # runs as a standalone script
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "rows in" in ok.stdout and "unc_train_pseudo.pth" in ok.stdout
    save_split(splits / "flickr" / "flickr_val.pth", [("nope.jpg", [0, 0, 5, 5], "gone")])
    main = _cli_main()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "flickr_val.pth: row 0: image not found" in err and "--rejects" in err
    assert main([*args, "--rejects"]) == 0
    out = capsys.readouterr().out
    assert "flickr_val.pth" in out and "1 rejected" in out
