"""``clipvg-pseudo-label`` end to end: an image folder (one corrupt file) to a dataset that the project's loader,
collator and training command consume; resume, labels-only regeneration, a datasets input, and refused inputs."""

import json
import os
import random
import subprocess
import sys

import datasets
import pyarrow.parquet as pq
import pytest

from clipvg_hf.commands.pseudo_label import main, pseudo_label
from clipvg_hf.data import CLIPVGCollator, CLIPVGEvalTransform, GroundingDataset, load_split
from clipvg_hf.processing_clipvg import build_clip_tokenizer
from clipvg_hf.pseudo_labels.detections import read_detection_shard
from clipvg_hf.pseudo_labels.templates import OFFICIAL_SEED, TemplateEngine

from _pseudo_tiny_models import build_blip, build_clip, build_detr, write_images
from conftest import free_port

ATTRIBUTES = ["red", "wooden", "striped", "young"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pseudo_cli")
    images = root / "photos"
    write_images(images, 6)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (images / "notes.txt").write_text("not an image")
    (root / "attributes.txt").write_text("\n".join(ATTRIBUTES) + "\n")
    return {
        "root": root,
        "images": images,
        "detr": build_detr(root / "detr"),
        "clip": build_clip(root / "clip"),
        "blip": build_blip(root / "blip"),
    }


def _args(setup, out, *extra):
    return [
        "--image_dir",
        str(setup["images"]),
        "--output_dir",
        str(out),
        "--detector",
        str(setup["detr"]),
        "--detection_threshold",
        "0.05",
        "--attribute_model",
        str(setup["clip"]),
        "--attribute_vocabulary",
        str(setup["root"] / "attributes.txt"),
        "--captioner",
        str(setup["blip"]),
        "--caption_max_new_tokens",
        "6",
        "--shard_size",
        "4",
        "--batch_size",
        "2",
        "--cpu",
        *extra,
    ]


@pytest.fixture(scope="module")
def run(setup):
    out = setup["root"] / "out"
    summary = pseudo_label(_args(setup, out, "--rejects", str(setup["root"] / "rejects.jsonl")))
    return out, summary


def _expressions(folder, config, split="train_pseudo"):
    rows = []
    for path in sorted((folder / config).glob(f"{split}-*.parquet")):
        for image in pq.read_table(path, columns=["file_name", "expressions"]).to_pylist():
            rows += [
                (image["file_name"], e["expression"], tuple(e["bbox"]), e["source"], e["row_index"])
                for e in image["expressions"]
            ]
    return rows


def test_folder_to_dataset_counts_rejects_and_card(run, setup):
    out, summary = run
    assert summary["images_in"] == 6 and summary["rejected"] == 1
    rejects = [json.loads(line) for line in (setup["root"] / "rejects.jsonl").read_text().splitlines()]
    assert [r["file_name"] for r in rejects] == ["broken.jpg"] and "cannot read image" in rejects[0]["reason"]
    assert summary["expressions"]["template"] > 0 and summary["expressions"]["relation"] >= 0
    assert summary["images_labelled"]["caption"] + summary["captions_unmatched"] + summary["captions_missing"] == 6
    card = (out / "README.md").read_text()
    assert "config_name: photos-unsup-single" in card and "config_name: photos-unsup-multi" in card
    assert str(setup["detr"]) in card and "20211024" in card and '"attr_conf_thresh": 0.3' in card
    manifest = json.loads((out / "pseudo_labels.json").read_text())
    assert manifest["counts"]["expressions"] == summary["expressions"]
    assert manifest["models"]["detector"]["model_type"] == "detr"


def test_template_rows_are_the_engines_on_the_intermediate_detections(run):
    out, summary = run
    expected = []
    for shard in sorted((out / "detections").glob("shard-*.parquet")):
        rng = random.Random(OFFICIAL_SEED)  # restarted per shard, as the official per split file
        engine = TemplateEngine()
        for item in read_detection_shard(shard):
            expected += [
                (item.record.file_name, c.text, c.box)
                for c in engine.sample(engine.candidates(item.for_templates()), rng)
            ]
    got = sorted(_expressions(out, "photos-unsup-single"), key=lambda r: r[4])
    assert [(f, t, b) for f, t, b, _, _ in got] == expected
    assert [r[4] for r in got] == list(range(len(expected))) and {r[3] for r in got} == {"template"}


def test_multi_config_concatenates_the_sources_in_order(run):
    out, summary = run
    rows = sorted(_expressions(out, "photos-unsup-multi"), key=lambda r: r[4])
    assert [r[4] for r in rows] == list(range(len(rows)))
    sources = [r[3] for r in rows]
    n = summary["expressions"]
    assert sources == ["template"] * n["template"] + ["relation"] * n["relation"] + ["caption"] * n["caption"]
    for source in ("template", "relation", "caption"):
        split = _expressions(out, "photos-unsup-multi", f"train_{source}")
        assert sorted(r[:3] for r in split) == sorted(r[:3] for r in rows if r[3] == source)


def test_dataset_feeds_the_loader_the_collator_and_training(run, converted_dir, tmp_path):
    out, summary = run
    split = load_split(out, "photos-unsup-multi", "train_pseudo")
    view = GroundingDataset(split, CLIPVGEvalTransform(), sources=["template"])
    assert len(view) == summary["expressions"]["template"]
    batch = CLIPVGCollator(build_clip_tokenizer())([view[0], view[1]])
    assert batch["pixel_values"].shape[0] == 2 and batch["input_ids"].shape[0] == 2
    from clipvg_hf.commands.train import main as train_main

    result = train_main(
        [
            "--model_name_or_path",
            str(converted_dir),
            "--dataset",
            str(out),
            "--dataset_config",
            "photos-unsup-multi",
            "--val_split",
            "train_template",
            "--output_dir",
            str(tmp_path / "run"),
            "--num_epochs",
            "1",
            "--per_device_batch_size",
            "2",
            "--eval_batch_size",
            "4",
            "--num_workers",
            "0",
            "--cpu",
            "--train_steps",
            "1",
        ]
    )
    assert (tmp_path / "run" / "best").is_dir() and result is not None


def test_reliability_scorer_and_curriculum_training_consume_the_dataset(run, converted_dir, tmp_path):
    """The generated multi-source config goes through the measurer (score) and trains from its scores."""
    from clipvg_hf.commands.train import main as train_main
    from clipvg_hf.curriculum.reliability import save_scores, score_model

    out, summary = run
    scores = score_model(converted_dir, out, "photos-unsup-multi", batch_size=4)
    rows = sorted(_expressions(out, "photos-unsup-multi"), key=lambda r: r[4])
    assert scores.row_index.tolist() == [r[4] for r in rows]
    assert scores.source.tolist() == [r[3] for r in rows]
    assert ((scores.reliability >= 0) & (scores.reliability <= 1)).all()
    scores_dir = tmp_path / "scores"
    save_scores(scores, scores_dir, plot=False)
    result = train_main(
        [
            *("--model_name_or_path", str(converted_dir), "--dataset", str(out)),
            *("--dataset_config", "photos-unsup-multi", "--val_split", "train_template"),
            *("--output_dir", str(tmp_path / "run"), "--num_epochs", "1", "--per_device_batch_size", "2"),
            *("--eval_batch_size", "4", "--num_workers", "0", "--cpu", "--train_steps", "1"),
            *("--curriculum_scores", str(scores_dir / "scores.parquet"), "--curriculum_pool", "threshold"),
            *("--curriculum_threshold", "0.0"),
        ]
    )
    assert (tmp_path / "run" / "best").is_dir() and result is not None


def test_rerun_resumes_and_labels_only_regenerates(run, setup):
    out, _ = run
    shards = sorted((out / "detections").glob("shard-*.parquet"))
    assert len(shards) == 2
    stamps = [s.stat().st_mtime_ns for s in shards]
    again = pseudo_label(_args(setup, out))  # every shard is done: nothing is detected again
    assert [s.stat().st_mtime_ns for s in shards] == stamps and again["images_in"] == 6
    fewer = pseudo_label(["--labels_only", "--output_dir", str(out), "--topn", "1", "--relations", "none"])
    assert fewer["expressions"]["relation"] == 0
    assert fewer["expressions"]["template"] <= again["expressions"]["template"]
    assert [s.stat().st_mtime_ns for s in shards] == stamps
    with pytest.raises(SystemExit) as err:  # other detection settings cannot reuse the shards
        main(_args(setup, out, "--detection_threshold", "0.5"))
    assert err.value.code == 2
    extra = setup["images"] / "zzz_new.png"  # the collection changed: the last shard no longer matches it
    extra.write_bytes((setup["images"] / "img_001.png").read_bytes())
    try:
        with pytest.raises(SystemExit) as err:
            main(_args(setup, out))
        assert err.value.code == 2
    finally:
        extra.unlink()
    main(["--labels_only", "--output_dir", str(out)])


def test_streaming_datasets_input_gives_the_folder_labels(run, setup, tmp_path):
    out, _ = run
    folder = tmp_path / "hfdata" / "data"
    folder.mkdir(parents=True)
    files = sorted(p for p in setup["images"].iterdir() if p.suffix in (".png", ".jpg"))
    table = datasets.Dataset.from_dict(
        {"image": [{"bytes": p.read_bytes(), "path": p.name} for p in files], "name": [p.name for p in files]},
        features=datasets.Features({"image": datasets.Image(), "name": datasets.Value("string")}),
    )
    table.to_parquet(str(folder / "train-00000-of-00001.parquet"))
    other = tmp_path / "out"
    args = _args(setup, other, "--name", "photos")[2:]
    summary = pseudo_label(["--dataset", str(folder.parent), "--streaming", "--name_column", "name", *args])
    assert summary["rejected"] == 1
    assert _expressions(other, "photos-unsup-multi") == _expressions(out, "photos-unsup-multi")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--image_dir": "EMPTY"}, "no image files"),
        ({"--detector": "no-such-org/no-such-detector"}, "--detector 'no-such-org/no-such-detector': not a model"),
        ({"--detector": "CLIP"}, "is a 'clip' model, which does not serve object-detection"),
        ({"--captioner": "DETR"}, "--captioner"),
        ({"--attribute_model": "DETR"}, "--attribute_model"),
    ],
)
def test_bad_input_is_refused_before_any_work(setup, tmp_path, capsys, monkeypatch, change, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "empty").mkdir()
    names = {
        "EMPTY": str(tmp_path / "empty"),
        "CLIP": str(setup["clip"]),
        "DETR": str(setup["detr"]),
        "BLIP": str(setup["blip"]),
    }
    args = _args(setup, tmp_path / "out")
    for flag, value in change.items():
        args[args.index(flag) + 1] = names.get(value, value)
    with pytest.raises(SystemExit) as err:
        main(args)
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_processes_give_the_labels_of_one(run, setup, tmp_path):
    out, _ = run
    other = tmp_path / "two"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launcher = "-m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1 --master_port".split()
    command = [sys.executable, *launcher, str(free_port()), "-m", "clipvg_hf.pseudo_labels", *_args(setup, other)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    sides = [json.loads(p.read_text()) for p in sorted((other / "detections").glob("shard-*.json"))]
    assert len(sides) == 2
    for config in ("photos-unsup-single", "photos-unsup-multi"):
        assert _expressions(other, config) == _expressions(out, config)
