"""Publishing against the loopback Hub stand-in (tests/utils/hub_server.py), then loading in fresh processes.

Pushes run through the ``clipvg-push`` command (``python -m clipvg_hf.hub.cli``, ``push_to_hub.py``) in subprocesses whose environment points huggingface_hub at the stand-in
(``HF_ENDPOINT``, ``HF_TOKEN``, an empty ``HF_HOME``, ``HF_HUB_DISABLE_XET=1``) before anything is imported. Loads
run in further fresh processes with their own empty ``HF_HOME``: once with ``clipvg_hf`` importable and once with it
blocked (Hub remote code only).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import BLOCK_PACKAGE
from utils.hub_server import DEFAULT_TOKEN, client_env, running_hub
from utils.paths import REPO_ROOT, TINY_DIR

REPO_ROOT = REPO_ROOT
FIXTURE = TINY_DIR
IMAGE = FIXTURE / "image_data/other/images/mscoco/images/train2014/COCO_train2014_000000581857.jpg"
MODEL_REPO, DATA_REPO, RELEASE_REPO = "org/clip-vg-tiny", "org/grounding-tiny", "org/clip-vg-release"
CONFIGS = ("refcoco-unsup-single", "referit-unsup-single")


@pytest.fixture(scope="module")
def hub():
    with running_hub() as (endpoint, state):
        yield endpoint, state


def hub_env(endpoint: str, home: Path) -> dict[str, str]:
    """Environment of a process that talks to the stand-in; set before any HF library is imported."""
    return client_env(endpoint, home, PYTHONPATH=str(REPO_ROOT))


def run(args: list[str], env: dict[str, str], cwd: Path, expect: int = 0) -> subprocess.CompletedProcess:
    return run_together([(args, env, cwd)], expect)[0]


def run_together(
    jobs: list[tuple[list[str], dict[str, str], Path]], expect: int = 0
) -> list[subprocess.CompletedProcess]:
    """Run Python processes concurrently (they are independent); assert each exits with ``expect``."""
    procs = [
        subprocess.Popen(
            [sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for args, env, cwd in jobs
    ]
    results = []
    for proc, (args, _, _) in zip(procs, jobs, strict=True):
        stdout, stderr = proc.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(args, proc.returncode, stdout, stderr))
    for result in results:
        assert result.returncode == expect, f"rc={result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return results


def last_json(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def repo_file(state, repo_type: str, repo_id: str, path: str) -> bytes:
    return state.repos[(repo_type, repo_id)].snapshot("main")[1][path].content


def card_snippets(card_text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card_text, flags=re.DOTALL)


def write_results(path: Path, model_dir: Path, dataset: str) -> dict:
    """A results file in the clipvg_hf.evaluation.results schema (hand-written numbers)."""
    digest = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    results = {
        "model": {"path": str(model_dir), "weights_sha256": digest, "config_sha256": "0" * 64},
        "dataset": {"name": dataset, "config": CONFIGS[0]},
        "metric": "Acc@0.5",
        "splits": {
            "val": {"accuracy": 0.1667, "mean_iou": 0.2123, "num_samples": 18},
            "testA": {"accuracy": 0.5, "mean_iou": 0.4, "num_samples": 6},
        },
    }
    path.write_text(json.dumps(results))
    return results


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A two-config dataset folder converted from the parity fixture's official split files."""
    from clipvg_hf.data import convert_pack

    out = tmp_path_factory.mktemp("hub_data") / "grounding"
    convert_pack(FIXTURE / "splits", FIXTURE / "image_data", out, "unsup-single", ["unc", "referit"], num_shards=2)
    return out


@pytest.fixture(scope="module")
def published(hub, converted_dir, data_dir, tmp_path_factory):
    """Push the fixture model (with results) and the two-config dataset through the CLI."""
    endpoint, _ = hub
    work = tmp_path_factory.mktemp("hub_push")
    results = write_results(work / "results.json", converted_dir, str(data_dir))
    model, data = run_together(
        [
            (
                [
                    "-m",
                    "clipvg_hf.hub.cli",
                    "model",
                    "--model_dir",
                    str(converted_dir),
                    "--repo_id",
                    MODEL_REPO,
                    "--results",
                    str(work / "results.json"),
                    "--dataset_id",
                    DATA_REPO,
                ],
                hub_env(endpoint, work / "m"),
                REPO_ROOT,
            ),
            (
                ["push_to_hub.py", "dataset", "--data_dir", str(data_dir), "--repo_id", DATA_REPO],
                hub_env(endpoint, work / "d"),
                REPO_ROOT,
            ),
        ]
    )
    return {"results": results, "work": work, "model_log": model.stdout, "data_log": data.stdout}


def test_model_repo_holds_weights_code_processor_and_card(hub, published, converted_dir):
    _, state = hub
    files = set(state.repos[("model", MODEL_REPO)].snapshot("main")[1])
    assert files == {
        ".gitattributes",
        "README.md",
        "config.json",
        "model.safetensors",
        "configuration_clipvg.py",
        "modeling_clipvg.py",
        "boxes_clipvg.py",
        "lean_ops_clipvg.py",
        "packing_clipvg.py",
        "processing_clipvg.py",
        "image_processing_clipvg.py",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    weights = repo_file(state, "model", MODEL_REPO, "model.safetensors")
    assert weights == (converted_dir / "model.safetensors").read_bytes()
    assert state.repos[("model", MODEL_REPO)].snapshot("main")[1]["model.safetensors"].lfs
    config = json.loads(repo_file(state, "model", MODEL_REPO, "config.json"))
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForZeroShotObjectDetection"}
    processor = json.loads(repo_file(state, "model", MODEL_REPO, "processor_config.json"))
    assert processor["auto_map"] == {"AutoProcessor": "processing_clipvg.CLIPVGProcessor"}
    for name in ("configuration_clipvg.py", "modeling_clipvg.py"):  # the folder's own copies (they match its weights)
        assert repo_file(state, "model", MODEL_REPO, name) == (converted_dir / name).read_bytes()
    for name in ("processing_clipvg.py", "image_processing_clipvg.py"):  # from the package: the folder has none
        assert repo_file(state, "model", MODEL_REPO, name) == (REPO_ROOT / "clipvg_hf" / name).read_bytes()


def test_model_card_model_index_equals_results_and_leaks_nothing(hub, published, converted_dir, data_dir, tmp_path):
    from huggingface_hub import ModelCard

    _, state = hub
    text = repo_file(state, "model", MODEL_REPO, "README.md").decode()
    (tmp_path / "README.md").write_text(text)
    card = ModelCard.load(tmp_path / "README.md")
    got = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    expected = {}
    for split, scores in published["results"]["splits"].items():
        expected[(split, "Acc@0.5")] = scores["accuracy"]
        expected[(split, "mean IoU")] = scores["mean_iou"]
    assert got == expected
    assert {r.dataset_type for r in card.data.eval_results} == {DATA_REPO}
    assert {r.dataset_config for r in card.data.eval_results} == {CONFIGS[0]}
    assert card.data.base_model == "openai/clip-vit-base-patch16" and card.data.license == "mit"
    assert card.data.pipeline_tag == "zero-shot-object-detection"
    for needle in (
        "Supervision: unsupervised, single-source",
        "Curriculum:",
        "@article{xiao2023clip",
        "trust_remote_code",
    ):
        assert needle in text
    for leak in (DEFAULT_TOKEN, str(converted_dir), str(data_dir), str(published["work"]), "/tmp", str(Path.home())):
        assert leak not in text


def test_dataset_repo_has_every_config_and_a_card(hub, published, data_dir, tmp_path):
    from huggingface_hub import DatasetCard

    _, state = hub
    files = set(state.repos[("dataset", DATA_REPO)].snapshot("main")[1])
    for config in CONFIGS:
        local = {p.name for p in (data_dir / config).glob("*.parquet")}
        assert {f"{config}/{name}" for name in local} <= files
    assert "conversion.json" in files
    text = repo_file(state, "dataset", DATA_REPO, "README.md").decode()
    (tmp_path / "README.md").write_text(text)
    data = DatasetCard.load(tmp_path / "README.md").data
    configs = {c["config_name"]: c for c in data.configs}
    assert set(configs) == set(CONFIGS) and configs[CONFIGS[0]].get("default") is True
    assert {c["config_name"] for c in data.dataset_info} == set(CONFIGS)
    assert "| refcoco-unsup-single | val | 13 | 18 | human: 18 |" in text
    assert "| refcoco-unsup-single | train_pseudo | 13 | 20 | template: 20 |" in text
    assert "@article{xiao2023clip" in text and "(x1, y1, x2, y2)" in text
    assert str(data_dir) not in text and DEFAULT_TOKEN not in text


LOAD_WITH_PACKAGE = """
import json, io, contextlib
import clipvg_hf
from transformers import AutoModel, AutoModelForZeroShotObjectDetection, pipeline
from datasets import get_dataset_config_names, load_dataset

out = {}
model = AutoModel.from_pretrained(MODEL_REPO)
out["module"] = type(model).__module__
grounder = pipeline("visual-grounding", model=MODEL_REPO)
out["pipeline"] = grounder("image.jpg", text=["the person on the left"])[0]["box"]
for i, snippet in enumerate(SNIPPETS):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(snippet, {})
    out[f"snippet{i}"] = buffer.getvalue()
out["configs"] = get_dataset_config_names(DATA_REPO)
ds = load_dataset(DATA_REPO, CONFIGS[0])
out["splits"] = {name: split.num_rows for name, split in ds.items()}
out["expressions"] = sum(len(row["expressions"]) for row in ds["val"])
out["image_size"] = list(ds["val"][0]["image"].size)
stream = load_dataset(DATA_REPO, CONFIGS[1], split="test", streaming=True)
out["streamed"] = [row["file_name"] for row in stream]
out["stream_type"] = type(stream).__name__
print(json.dumps(out))
"""

LOAD_REMOTE_ONLY = """
import json, io, contextlib
from transformers import AutoModel, AutoProcessor, pipeline

out = {}
model = AutoModel.from_pretrained(MODEL_REPO, trust_remote_code=True)
out["module"] = type(model).__module__
out["processor"] = type(AutoProcessor.from_pretrained(MODEL_REPO, trust_remote_code=True)).__name__
detector = pipeline("zero-shot-object-detection", model=MODEL_REPO, trust_remote_code=True)
out["pipeline"] = detector("image.jpg", candidate_labels=["the person on the left"])[0]["box"]
buffer = io.StringIO()
with contextlib.redirect_stdout(buffer):
    exec(SNIPPETS[0], {})
out["snippet0"] = buffer.getvalue()
print(json.dumps(out))
"""


def _load_script(body: str, snippets: list[str], prelude: str = "") -> str:
    header = f"MODEL_REPO, DATA_REPO, CONFIGS = {MODEL_REPO!r}, {DATA_REPO!r}, {CONFIGS!r}\nSNIPPETS = {snippets!r}\n"
    return prelude + header + body


def test_fresh_processes_load_model_pipeline_and_dataset(hub, published, tmp_path):
    endpoint, state = hub
    snippets = card_snippets(repo_file(state, "model", MODEL_REPO, "README.md").decode())
    assert len(snippets) == 2
    shutil.copy(IMAGE, tmp_path / "image.jpg")
    package, remote = map(
        last_json,
        run_together(
            [
                (
                    ["-c", _load_script(LOAD_WITH_PACKAGE, snippets)],
                    hub_env(endpoint, tmp_path / "home_package"),
                    tmp_path,
                ),
                (
                    ["-c", _load_script(LOAD_REMOTE_ONLY, snippets, BLOCK_PACKAGE)],
                    hub_env(endpoint, tmp_path / "home_remote"),
                    tmp_path,
                ),
            ]
        ),
    )

    assert package["module"] == "clipvg_hf.modeling_clipvg"
    assert remote["module"].startswith("transformers_modules.")
    assert remote["processor"] == "CLIPVGProcessor"
    # the card's remote-code snippet prints the same boxes with and without the package
    assert package["snippet0"] == remote["snippet0"] and package["snippet0"].count("\n") == 2
    assert package["snippet1"].count("\n") == 2 and "the person on the left" in package["snippet1"]
    for key in ("xmin", "ymin", "xmax", "ymax"):
        assert abs(package["pipeline"][key] - remote["pipeline"][key]) <= 1.0  # the stock pipeline rounds

    assert sorted(package["configs"]) == sorted(CONFIGS)
    assert package["splits"] == {"train_pseudo": 13, "val": 13, "testA": 3}
    assert package["expressions"] == 18 and len(package["image_size"]) == 2
    assert package["stream_type"] == "IterableDataset" and len(package["streamed"]) == 3


def test_release_converts_evaluates_and_publishes_those_numbers(hub, published, data_dir, tmp_path):
    from huggingface_hub import ModelCard

    endpoint, state = hub
    work = tmp_path / "release"
    run(
        [
            "push_to_hub.py",
            "release",
            "--checkpoint",
            str(FIXTURE / "checkpoint.pth"),
            "--dataset",
            str(data_dir),
            "--dataset_config",
            CONFIGS[0],
            "--split",
            "val",
            "--split",
            "testA",
            "--repo_id",
            RELEASE_REPO,
            "--work_dir",
            str(work),
            "--dataset_id",
            DATA_REPO,
            "--private",
        ],
        hub_env(endpoint, tmp_path / "home"),
        REPO_ROOT,
    )
    assert state.repos[("model", RELEASE_REPO)].private
    results = json.loads((work / "results.json").read_text())
    assert (
        results["model"]["weights_sha256"]
        == hashlib.sha256(repo_file(state, "model", RELEASE_REPO, "model.safetensors")).hexdigest()
    )
    (tmp_path / "README.md").write_bytes(repo_file(state, "model", RELEASE_REPO, "README.md"))
    card = ModelCard.load(tmp_path / "README.md")
    accuracy = {r.dataset_split: r.metric_value for r in card.data.eval_results if r.metric_name == "Acc@0.5"}
    assert accuracy == {split: s["accuracy"] for split, s in results["splits"].items()}
    official = json.loads((FIXTURE / "expected.json").read_text())["splits"]
    assert accuracy == pytest.approx(
        {"val": official["unc/val"]["acc_at_0.5"], "testA": official["unc/testA"]["acc_at_0.5"]}, abs=1e-9
    )
    assert "the official checkpoint `checkpoint.pth`" in card.text and str(work) not in str(card)


def test_cli_errors_are_clear(hub, converted_dir, tmp_path):
    """One process, several commands: missing token, malformed repo id, a folder without weights."""
    endpoint, state = hub
    before = set(state.repos)
    script = textwrap.dedent(f"""
        import contextlib, io, sys, os
        sys.argv = ["clipvg-push"]
        from clipvg_hf.commands.push import main
        def attempt(args):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                try:
                    rc = main(args)
                except SystemExit as exit_info:
                    rc = exit_info.code
            print(rc, err.getvalue().strip().replace("\\n", " "))
        attempt(["model", "--model_dir", {str(converted_dir)!r}, "--repo_id", "org/fine"])
        attempt(["model", "--model_dir", {str(converted_dir)!r}, "--repo_id", "not a repo", "--dry_run", "x"])
        attempt(["model", "--model_dir", {str(tmp_path)!r}, "--repo_id", "org/fine", "--dry_run", "y"])
    """)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip_vg"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"0")
    env = hub_env(endpoint, tmp_path / "home")
    del env["HF_TOKEN"]
    lines = run(["-c", script], env, tmp_path).stdout.strip().splitlines()[-3:]
    assert lines[0].startswith("2 error: no Hugging Face token: set HF_TOKEN"), lines[0]
    assert lines[1].startswith("2 error: malformed repo id 'not a repo': expected ORG/NAME"), lines[1]
    assert "has no model weights: expected model.safetensors" in lines[2] and "pytorch_model.bin" in lines[2]
    assert set(state.repos) == before
