"""clipvg_hf.hub without a server: staged folders, dry runs, cards and the error messages."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard
from huggingface_hub import constants as hub_constants

from clipvg_hf import hub
from clipvg_hf.errors import ResultsError
from clipvg_hf.evaluation import load_results
from clipvg_hf.hub import HubPublishError
from clipvg_hf.hub.release import _check_setting_against_args

from utils.paths import TINY_DIR

FIXTURE = TINY_DIR


def results_for(model_dir: Path, dataset: str = "org/grounding-tiny", config: str = "refcoco-unsup-single") -> dict:
    digest = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    return {
        "model": {"path": str(model_dir), "weights_sha256": digest, "config_sha256": "0" * 64},
        "dataset": {"name": dataset, "config": config},
        "metric": "Acc@0.5",
        "splits": {
            "val": {"accuracy": 0.6238, "mean_iou": 0.55, "num_samples": 10834},
            "testA": {"accuracy": 0.6503, "num_samples": 5657},
        },
    }


@pytest.fixture
def online(monkeypatch):
    """Let resolve_token run as if online (conftest sets HF_HUB_OFFLINE=1 for the test session)."""
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)


def test_dry_run_stages_exactly_what_push_uploads(converted_dir, tmp_path, monkeypatch, online):
    results = results_for(converted_dir)
    dry = hub.push_model(converted_dir, "org/clip-vg", results, dry_run_dir=tmp_path / "dry")
    assert dry.url is None and dry.folder == tmp_path / "dry"
    staged = {p.name: p.read_bytes() for p in (tmp_path / "dry").iterdir()}
    assert sorted(staged) == dry.files
    assert staged["model.safetensors"] == (converted_dir / "model.safetensors").read_bytes()

    uploaded = {}

    def fake_upload_folder(self, *, repo_id, folder_path, commit_message, **kwargs):
        uploaded.update({p.name: p.read_bytes() for p in Path(folder_path).iterdir()})

    created = {}

    def fake_create_repo(self, repo_id, **kwargs):
        created.update(kwargs, repo_id=repo_id)
        return f"https://hub/{repo_id}"

    monkeypatch.setattr(HfApi, "create_repo", fake_create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", fake_upload_folder)
    pushed = hub.push_model(converted_dir, "org/clip-vg", results, token="hf_not_a_real_token", private=True)
    assert pushed.url == "https://hub/org/clip-vg" and pushed.files == dry.files
    assert uploaded == staged
    assert created == {"repo_id": "org/clip-vg", "private": True, "exist_ok": True}


def test_sharded_weights_are_staged_and_hashed(converted_model, tmp_path):
    sharded = tmp_path / "sharded"
    converted_model.save_pretrained(sharded, max_shard_size="6MB")
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    assert len(shards) > 1
    digest = hub.weights_sha256(sharded)
    assert digest == hub.weights_sha256(sharded) and len(digest) == 64
    result = hub.push_model(sharded, "org/clip-vg", dry_run_dir=tmp_path / "dry")
    assert {"model.safetensors.index.json", *shards} <= set(result.files)
    assert hub.count_parameters(sharded) == sum(p.numel() for p in converted_model.state_dict().values())


def test_missing_processor_files_are_built_offline_and_loadable(converted_dir, tmp_path):
    from transformers import AutoProcessor

    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(converted_dir / name, bare / name)
    result = hub.push_model(bare, "org/clip-vg", dry_run_dir=tmp_path / "dry", setting="full")
    assert any("built the default processor" in note for note in result.notes)
    assert {
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "processing_clipvg.py",
        "image_processing_clipvg.py",
        "configuration_clipvg.py",
        "modeling_clipvg.py",
    } <= set(result.files)
    processor = AutoProcessor.from_pretrained(tmp_path / "dry")
    assert processor.tokenizer("a dog")["input_ids"][0] == 49406
    card = (tmp_path / "dry" / "README.md").read_text()
    assert "model-index" not in card and "No evaluation results were supplied" in card
    assert "Supervision: fully supervised" in card


def test_incomplete_processor_is_refused(converted_dir, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(converted_dir, partial)
    (partial / "tokenizer.json").unlink()
    with pytest.raises(HubPublishError, match="incomplete processor"):
        hub.push_model(partial, "org/clip-vg", dry_run_dir=tmp_path / "dry")


def test_results_for_another_model_are_refused(converted_dir, tmp_path):
    results = results_for(converted_dir)
    results["model"]["weights_sha256"] = "ab" * 32
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with pytest.raises(ResultsError, match="belongs to another model: it was computed for weights sha256 ababab"):
        hub.push_model(converted_dir, "org/clip-vg", path, dry_run_dir=tmp_path / "dry")
    assert not (tmp_path / "dry").exists()


def test_local_dataset_in_results_needs_a_hub_id(converted_dir, tmp_path):
    results = results_for(converted_dir, dataset=str(tmp_path))
    with pytest.raises(HubPublishError, match="local dataset folder .*pass --dataset_id"):
        hub.push_model(converted_dir, "org/clip-vg", results, dry_run_dir=tmp_path / "dry")
    hub.push_model(converted_dir, "org/clip-vg", results, dry_run_dir=tmp_path / "dry", dataset_id="org/data")
    card = ModelCard.load(tmp_path / "dry" / "README.md")
    assert {r.dataset_type for r in card.data.eval_results} == {"org/data"}
    assert str(tmp_path) not in str(card)


@pytest.mark.parametrize(
    "repo_id",
    [
        "clip-vg",
        "org/",
        "/name",
        "org/na me",
        "org/a/b",
        "org/x--y",
        "org/x..y",
        "org/name.git",
        "-org/name",
        "org/" + "n" * 97,
    ],
)
def test_malformed_repo_ids(repo_id):
    with pytest.raises(HubPublishError, match="malformed repo id"):
        hub.validate_repo_id(repo_id)


def test_good_repo_ids():
    for repo_id in ("org/clip-vg-refcoco", "Some_User/clip.vg_2", "a/b"):
        assert hub.validate_repo_id(repo_id) == repo_id


def test_missing_token(monkeypatch, tmp_path, online):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(hub.repo, "get_token", lambda: None)
    with pytest.raises(HubPublishError, match="no Hugging Face token: set HF_TOKEN, run `hf auth login`"):
        hub.resolve_token(None)
    assert hub.resolve_token("hf_given") == "hf_given"


def test_offline_mode_blocks_pushing():
    with pytest.raises(HubPublishError, match="HF_HUB_OFFLINE"):
        hub.resolve_token("hf_given")  # conftest keeps the test session offline


def test_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip_vg"}))
    with pytest.raises(HubPublishError, match="has no model weights: expected model.safetensors"):
        hub.push_model(tmp_path, "org/clip-vg", dry_run_dir=tmp_path / "dry")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(HubPublishError, match="not a CLIP-VG model"):
        hub.push_model(tmp_path, "org/clip-vg", dry_run_dir=tmp_path / "dry")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.update(metric="Acc@0.7"), "metric must be 'Acc@0.5'"),
        (lambda r: r["splits"]["val"].update(accuracy=62.38), "accuracy must be a fraction"),
        (lambda r: r["model"].pop("weights_sha256"), "weights_sha256"),
        (lambda r: r.pop("dataset"), "dataset.name and dataset.config"),
    ],
)
def test_malformed_results_file(converted_dir, tmp_path, mutate, message):
    results = results_for(converted_dir)
    mutate(results)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with pytest.raises(ResultsError, match=message):
        load_results(path)


def test_training_settings_for_the_card():
    full = hub.training_setting("full")
    assert full.supervision == "fully supervised" and "human-annotated" in full.label_sources
    assert "not recorded" in full.curriculum
    multi = hub.training_setting("unsup-multi-msa")
    assert multi.supervision.startswith("unsupervised, multi-source") and "MSA" in multi.curriculum
    assert "relation" in multi.label_sources and "caption" in multi.label_sources
    assert "SSA" in hub.training_setting("unsup-single", curriculum="ssa").curriculum
    assert hub.split_config_name("refcocog-umd-unsup-single-ssa") == ("refcocog-umd", "unsup-single-ssa")
    with pytest.raises(HubPublishError, match="unknown training setting"):
        hub.training_setting("weakly")
    with pytest.raises(HubPublishError, match="sup_type='full'"):
        _check_setting_against_args("unsup-single", argparse.Namespace(sup_type="full"))
    _check_setting_against_args("unsup-single", argparse.Namespace(sup_type="un"))


def test_model_card_contents(converted_dir, tmp_path):
    results = results_for(converted_dir)
    hub.push_model(converted_dir, "org/clip-vg-refcoco", results, dry_run_dir=tmp_path / "dry", curriculum="ssa")
    card = ModelCard.load(tmp_path / "dry" / "README.md")
    values = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert values == {("val", "Acc@0.5"): 0.6238, ("val", "mean IoU"): 0.55, ("testA", "Acc@0.5"): 0.6503}
    assert {r.dataset_name for r in card.data.eval_results} == {"RefCOCO"}
    assert card.data.datasets == ["org/grounding-tiny"] and card.data.library_name == "transformers"
    assert "| val | 62.38 | 0.5500 | 10834 |" in card.text and "| testA | 65.03 | - | 5657 |" in card.text
    assert "Curriculum: single-source self-paced curriculum adapting (SSA)" in card.text
    assert "MIT-licensed" in card.text and "@article{xiao2023clip" in card.text
    assert "from_pretrained(repo_id, trust_remote_code=True)" in card.text and '"org/clip-vg-refcoco"' in card.text
    assert str(converted_dir) not in str(card) and str(tmp_path) not in str(card)


def test_dataset_dry_run_writes_card_and_plan(tmp_path):
    from clipvg_hf.data import convert_pack

    data = tmp_path / "data"
    convert_pack(FIXTURE / "splits", FIXTURE / "image_data", data, "unsup-single", ["referit", "flickr"], num_shards=1)
    result = hub.push_dataset(
        data, "org/grounding", default_config="referit-unsup-single", dry_run_dir=tmp_path / "dry"
    )
    plan = json.loads((tmp_path / "dry" / "upload_plan.json").read_text())
    assert plan["push_order"] == ["referit-unsup-single", "flickr30k-unsup-single"]
    assert plan["rows"]["referit-unsup-single"]["test"] == {"images": 3, "expressions": 4, "sources": {"human": 4}}
    card = (tmp_path / "dry" / "README.md").read_text()
    assert "default: true" in card and "| referit-unsup-single | test | 3 | 4 | human: 4 |" in card
    assert 'load_dataset("org/grounding", "referit-unsup-single")' in card and str(tmp_path) not in card
    assert result.files == [
        "README.md",
        "upload_plan.json",
        "referit-unsup-single/test-00000-of-00001.parquet",
        "flickr30k-unsup-single/test-00000-of-00001.parquet",
    ]  # what would be uploaded
    assert all((tmp_path / "dry" / name).is_file() for name in result.files)
    with pytest.raises(HubPublishError, match="default config 'nope' is not in"):
        hub.push_dataset(data, "org/grounding", default_config="nope", dry_run_dir=tmp_path / "dry2")
