"""Hub REC layouts (clipvg_hf.data.hub_layouts): local parquet folders with each layout's features, filled with the
parity fixture's RefCOCO rows, give the native path's hit counts and IoUs; predictions files; bad input."""

import json

import datasets
import pytest

from clipvg_hf.commands.evaluate import main as evaluate_main
from clipvg_hf.data import load_split
from clipvg_hf.data.hub_layouts import (
    LAYOUTS,
    MappedLayout,
    detect_layout,
    open_split,
    partition_note,
    register_layout,
)
from clipvg_hf.errors import UsageError
from clipvg_hf.evaluation import evaluate_model, score_predictions

from utils.hub_layout_factory import (
    LAYOUT_NAMES,
    SPLIT_NAMES,
    fixture_layout_folder,
    fixture_rows,
    layout_table,
    write_layout_folder,
)
from utils.paths import COCO_IMAGES

NATIVE_CONFIG = "refcoco-unsup-single"


def _key(record):
    return (record["expression"], record["width"], record["height"], tuple(record["target_box"]))


@pytest.fixture(scope="module")
def native(converted_dir, fixture_dataset, tmp_path_factory):
    """The native path (clipvg-convert-splits folder) on the fixture's UNC val: results and predictions."""
    predictions = tmp_path_factory.mktemp("native") / "native.jsonl"
    results = evaluate_model(
        converted_dir, str(fixture_dataset), NATIVE_CONFIG, ["val"], batch_size=32, predictions=predictions
    )
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    return results, records, predictions


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_layout_folder_gives_the_native_hits_and_ious(layout, native, converted_dir, expected_json, tmp_path, capsys):
    folder = fixture_layout_folder(tmp_path / "data", layout)
    assert detect_layout(load_split(folder, None, SPLIT_NAMES[layout]["val"]).features).name == layout
    names = SPLIT_NAMES[layout]
    output, predictions = tmp_path / "results.json", tmp_path / "predictions.jsonl"
    args = ["--model_name_or_path", str(converted_dir), "--dataset", str(folder), "--split", names["val"]]
    args += ["--batch_size", "32", "--cpu", "--output", str(output)]
    args += ["--predictions", str(predictions)]
    if layout == "jxu124/refcoco":  # images not embedded: image_path read under the COCO train2014 folder
        args += ["--image_root", str(COCO_IMAGES)]
    assert evaluate_main(args) == 0
    assert f"(layout {layout}): " in capsys.readouterr().err
    results = json.loads(output.read_text())
    assert results["dataset"]["layout"] == layout and results["dataset"]["config"] == "default"
    native_results, native_records, _ = native
    for split in ("val",):  # 18 expressions on 13 images (the fixture's testA repeats 6 of them)
        ours, theirs = results["splits"][names[split]], native_results["splits"][split]
        assert ours["num_samples"] == theirs["num_samples"] == expected_json["splits"][f"unc/{split}"]["n"]
        assert ours["accuracy"] == theirs["accuracy"] == expected_json["splits"][f"unc/{split}"]["acc_at_0.5"]
        assert ours["mean_iou"] == pytest.approx(theirs["mean_iou"], abs=1e-7)
        assert ours["rejected"] == 0 and "note" not in ours
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    for split in ("val",):
        mine = {_key(r): r["iou"] for r in records if r["split"] == names[split]}
        other = {_key(r): r["iou"] for r in native_records if r["split"] == split}
        assert mine.keys() == other.keys()
        assert all(mine[k] == pytest.approx(other[k], abs=1e-6) for k in other)
    # every identity the layout carries is kept (the fixture's made-up COCO ids)
    first = next(r for r in records if r["split"] == names["val"] and r["expression"] == "man in the middle")
    if layout != "Kangheng/refcoco":
        assert first["ann_id"] == "5003"
    if layout in ("jxu124/refcoco-benchmark", "jxu124/refcoco"):
        assert (first["ref_id"], first["sent_id"], first["image_id"]) == ("903", "70003", "1001")


def test_predictions_file_round_trips_through_the_metric(native):
    results, records, path = native
    expected_hits = round(results["splits"]["val"]["accuracy"] * results["splits"]["val"]["num_samples"])
    scores = score_predictions(path, by_split=True)  # the file as written
    assert scores["hits"] == expected_hits
    for split in ("val",):
        ours = scores["splits"][split]
        assert ours["hits"] == expected_hits
        assert ours["num_samples"] == results["splits"][split]["num_samples"]
        assert ours["mean_iou"] == pytest.approx(results["splits"][split]["mean_iou"], abs=1e-5)
        assert set(ours) >= {"ACC@0.1", "ACC@0.3", "ACC@0.5", "ACC@0.7", "ACC@0.9", "center_accuracy"}
        assert ours["ACC@0.5"] == ours["accuracy"]
    pixels = score_predictions(records, pred_key="pred_box", target_key="target_box")
    assert pixels["hits"] == scores["hits"] and pixels["mean_iou"] == pytest.approx(scores["mean_iou"], abs=1e-9)
    for record in records:  # the IoU written is the one scored
        assert record["iou"] == pytest.approx(score_predictions([record])["mean_iou"], abs=1e-5)


def test_metric_scores_a_file_as_lmms_eval(tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [
        {"pred_box_norm": [0.0, 0.0, 0.5, 0.5], "target_box_norm": [0.0, 0.0, 0.5, 0.5]},  # IoU 1
        {"pred_box_norm": [0.0, 0.0, 0.5, 0.5], "target_box_norm": [0.25, 0.0, 0.75, 0.5]},  # IoU 1/3, centre in
        {"pred_box_norm": [0.0, 0.0, 0.0, 0.0], "target_box_norm": [0.5, 0.5, 0.6, 0.6]},  # no answer: IoU 0
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    scores = score_predictions(path)
    assert scores["hits"] == 1 and scores["accuracy"] == pytest.approx(1 / 3)
    assert scores["ACC@0.3"] == pytest.approx(2 / 3) and scores["ACC@0.9"] == pytest.approx(1 / 3)
    assert scores["center_accuracy"] == pytest.approx(2 / 3)
    assert scores["mean_iou"] == pytest.approx((1 + 1 / 3) / 3)
    path.write_text(json.dumps(lines[0]) + "\n" + json.dumps({"pred_box_norm": [0.5, 0, 0.1, 1]}) + "\n")
    with pytest.raises(ValueError, match=r"p.jsonl line 2: 'pred_box_norm' .* inverted"):
        score_predictions(path)


def _lmms_standin(tmp_path, rows, split="val"):
    return write_layout_folder(
        tmp_path / "lmms", "lmms-lab/RefCOCO", {split: layout_table("lmms-lab/RefCOCO", rows, split)}
    )


def test_mixed_val_is_named_on_the_command_and_in_the_results(converted_dir, tmp_path, capsys):
    assert "UNC val (3,811) + Google val (5,000)" in partition_note("lmms-lab/RefCOCO", "val", 8811)
    assert "UMD val (2,573) + Google val (5,000)" in partition_note("lmms-lab/RefCOCO", "val", 7573)
    assert "Google test" in partition_note("lmms-lab/RefCOCO", "test", 5000)
    assert partition_note("lmms-lab/RefCOCO", "testA", 1975) is None
    folder = _lmms_standin(tmp_path, fixture_rows("testA"))
    # a 6-row stand-in of the 8,811-row split: the count goes through num_rows
    opened = open_split(str(folder), None, "val", num_rows=8811)
    assert opened.lines[1].startswith("warning: lmms-lab RefCOCO 'val' (8,811 objects) is UNC val")
    assert open_split(str(folder), None, "val").report.note is None
    results = evaluate_model(converted_dir, str(folder), None, ["val"], batch_size=32, num_rows=8811)
    assert "UNC val (3,811) + Google val (5,000)" in results["splits"]["val"]["note"]
    assert "warning: lmms-lab RefCOCO 'val'" in capsys.readouterr().err


def test_bad_rows_are_rejected_counted_and_named(tmp_path):
    rows = fixture_rows("testA")
    rows[1] = {**rows[1], "xywh": [10.0, 10.0, 0.4, 30.0]}  # no area after the official truncation
    rows[2] = {**rows[2], "xywh": [600.0, 10.0, 200.0, 30.0]}  # beyond the image's right edge
    table = layout_table("lmms-lab/RefCOCO", rows, "testA")
    table = table.cast_column("image", datasets.Image(decode=False))
    missing = table.map(lambda row, i: {"image": None if i == 3 else row["image"]}, with_indices=True)
    folder = write_layout_folder(tmp_path / "lmms", "lmms-lab/RefCOCO", {"testA": missing})
    opened = open_split(str(folder), None, "testA")
    report = opened.report
    assert (report.source_rows, report.expressions_in, report.expressions, len(report.rejected)) == (6, 6, 3, 3)
    reasons = {r["source_row"]: r["reason"] for r in report.rejected}
    assert "no area after the official int truncation" in reasons[1]
    assert "lies outside the" in reasons[2] and "missing image" in reasons[3]
    assert "3 rejected (e.g. row 1:" in opened.lines[0]
    assert sorted(e["row_index"] for r in opened.data for e in r["expressions"]) == [0, 4, 5]


def test_path_layout_reads_nothing_outside_image_root(tmp_path):
    rows = fixture_rows("testA")
    table = layout_table("jxu124/refcoco", rows, "testA").to_list()
    table[0]["image_path"] = "../../secret.jpg"
    table[1]["image_path"] = "coco/train2014/not_there.jpg"
    table[2]["raw_image_info"] = json.dumps({"width": 10, "height": 10})
    folder = tmp_path / "jxu"
    write_layout_folder(
        folder,
        "jxu124/refcoco",
        {"test": datasets.Dataset.from_list(table, features=layout_table("jxu124/refcoco", rows, "t").features)},
    )
    report = open_split(str(folder), None, "test", image_root=COCO_IMAGES).report
    reasons = {r["source_row"]: r["reason"] for r in report.rejected}
    assert "leaves" in reasons[0] and "image not found under --image_root" in reasons[1]
    assert "but the dataset says 10x10" in reasons[2] and report.expressions == 3


def _error(capsys, args):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(args)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1]


def test_command_errors_are_one_line(converted_dir, tmp_path, capsys):
    model = ["--model_name_or_path", str(converted_dir), "--cpu"]
    jxu = fixture_layout_folder(tmp_path / "jxu", "jxu124/refcoco")
    line = _error(capsys, [*model, "--dataset", str(jxu), "--split", "validation"])
    assert line.startswith("error: --dataset") and "stores image paths" in line and "--image_root" in line
    lmms = fixture_layout_folder(tmp_path / "lmms", "lmms-lab/RefCOCO")
    line = _error(capsys, [*model, "--dataset", str(lmms), "--split", "val", "--image_root", str(COCO_IMAGES)])
    assert line == f"error: --image_root: layout lmms-lab/RefCOCO of --dataset {lmms} embeds its images; leave it out"
    line = _error(capsys, [*model, "--dataset", str(lmms), "--split", "validation"])
    assert line.startswith(f"error: --dataset {lmms} split 'validation': ") and "val" in line
    other = tmp_path / "other" / "data"
    other.mkdir(parents=True)
    datasets.Dataset.from_dict({"img": ["a"], "caption": ["b"]}).to_parquet(
        str(other / "train-00000-of-00001.parquet")
    )
    line = _error(capsys, [*model, "--dataset", str(other.parent), "--split", "train"])
    assert "unknown layout: columns ['caption', 'img']; supported layouts" in line
    assert all(name in line for name in LAYOUTS)


def test_a_new_layout_is_a_small_mapping(tmp_path):
    rows = fixture_rows("testA")
    table = datasets.Dataset.from_list(
        [
            {
                "picture": (COCO_IMAGES / r["image"]).read_bytes(),
                "texts": [r["text"]],
                "box": r["xywh"],
                "pic_id": r["image_id"],
            }
            for r in rows
        ],
        features=datasets.Features(
            {
                "picture": datasets.Image(),
                "texts": datasets.List(datasets.Value("string")),
                "box": datasets.List(datasets.Value("float64"), length=4),
                "pic_id": datasets.Value("int64"),
            }
        ),
    )
    folder = write_layout_folder(tmp_path / "mine", "mine", {"test": table})
    layout = register_layout(
        MappedLayout(
            "me/my-refs",
            {"image": "picture", "sentences": "texts", "bbox": "box", "image_id": "pic_id"},
            box_format="xywh",
        )
    )
    try:
        opened = open_split(str(folder), None, "test")
        assert opened.layout is layout and opened.report.expressions == 6 and opened.report.images == 3
        native = open_split(str(fixture_layout_folder(tmp_path / "lmms", "lmms-lab/RefCOCO")), None, "testA")
        boxes = lambda data: sorted(tuple(e["bbox_official"]) for r in data for e in r["expressions"])  # noqa: E731
        assert boxes(opened.data) == boxes(native.data)
    finally:
        LAYOUTS.pop("me/my-refs")


def test_all_rows_rejected_is_an_error(tmp_path):
    rows = [{**r, "xywh": [0.0, 0.0, 0.5, 0.5]} for r in fixture_rows("testA")]
    folder = _lmms_standin(tmp_path, rows, "testA")
    with pytest.raises(UsageError, match=r"all 6 expressions of 6 rows rejected, e.g. box has no area"):
        open_split(str(folder), None, "testA")


def test_predict_and_score_read_a_layout(converted_dir, tmp_path, capsys):
    from clipvg_hf.commands.curriculum import score_main
    from clipvg_hf.commands.predict import main as predict_main

    folder = fixture_layout_folder(tmp_path / "data", "Kangheng/refcoco")
    output = tmp_path / "predictions.jsonl"
    args = ["--model_name_or_path", str(converted_dir), "--dataset", str(folder), "--split", "testA"]
    assert predict_main([*args, "--output", str(output)]) == 0
    printed = json.loads(capsys.readouterr().out)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["row_index"] for r in records] == list(range(6)) and printed["num_samples"] == 6
    assert score_predictions(output)["hits"] == round(printed["accuracy"] * 6)
    assert score_main([*args, "--output_dir", str(tmp_path / "scores"), "--no_plot", "--cpu"]) == 0
    scores = datasets.Dataset.from_parquet(str(tmp_path / "scores" / "scores.parquet"))
    assert len(scores) == 6


def test_convert_from_hub_writes_the_project_format(tmp_path, capsys):
    from clipvg_hf.commands.convert_splits import main as convert_main
    from clipvg_hf.data import GroundingDataset

    folder = fixture_layout_folder(tmp_path / "bench", "jxu124/refcoco-benchmark")
    out = tmp_path / "out"
    assert convert_main(["--from_hub", str(folder), "--output_dir", str(out), "--config", "refcoco-benchmark"]) == 0
    assert "18 kept on 13 images, 0 rejected" in capsys.readouterr().out
    converted = load_split(out, "refcoco-benchmark", "refcoco_unc_val")
    direct = open_split(str(folder), None, "refcoco_unc_val").data
    assert converted.to_list() == direct.to_list()  # images once per split, every id kept
    assert len(GroundingDataset(converted)) == 18
    log = json.loads((out / "conversion.json").read_text())["refcoco-benchmark"]
    assert log["layout"] == "jxu124/refcoco-benchmark" and {f["rows_out"] for f in log["files"]} == {18, 6}
    # a path layout's images are embedded: the folder then stands alone
    jxu = fixture_layout_folder(tmp_path / "jxu", "jxu124/refcoco")
    args = ["--from_hub", str(jxu), "--output_dir", str(tmp_path / "out2"), "--splits", "test"]
    with pytest.raises(SystemExit) as exit_info:  # the missing --image_root is named before any work
        convert_main(args)
    assert exit_info.value.code == 2 and "pass --image_root" in capsys.readouterr().err
    assert convert_main([*args, "--image_root", str(COCO_IMAGES)]) == 0
    rows = load_split(tmp_path / "out2", "jxu", "test").cast_column("image", datasets.Image(decode=False))
    assert all(row["image"]["bytes"] == (COCO_IMAGES / row["file_name"]).read_bytes() for row in rows)
