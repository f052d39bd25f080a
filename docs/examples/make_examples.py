#!/usr/bin/env python
"""Regenerate the example cards in this folder from the parity fixture (tiny model, official split files).

    python docs/examples/make_examples.py

Converts the fixture checkpoint and two fixture configs, evaluates the model (``clipvg_hf.evaluation`` when present,
else the official accuracies recorded in the fixture), pushes both to the loopback Hub stand-in of the tests with
``push_to_hub.py``, and writes the published README.md files as ``model_card.md`` and ``dataset_card.md``. The HiVG
fixture checkpoint goes up with ``push_to_hub.py release --merge_lora`` (converted, evaluated on its own split
files); its card is ``model_card_hivg.md``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "parity" / "tiny"
HIVG_FIXTURE = ROOT / "tests" / "fixtures" / "hivg_tiny"
HIVG_REPO, HIVG_DATA_REPO, HIVG_CONFIG = "your-org/hivg-tiny", "your-org/hivg-grounding-tiny", "refcoco-full"
MODEL_REPO, DATA_REPO, CONFIG, SPLITS = (
    "your-org/clip-vg-tiny",
    "your-org/clip-vg-grounding-tiny",
    "refcoco-unsup-single",
    ("val", "testA"),
)

sys.path.insert(0, str(ROOT / "tests"))
from utils.hub_server import DEFAULT_TOKEN, running_hub


def fixture_results(model_dir: Path, data_dir: Path) -> dict:
    """Evaluate with clipvg_hf.evaluation, or fall back to the official accuracies stored with the fixture."""
    try:
        from clipvg_hf.evaluation import evaluate_model
    except ImportError:
        official = json.loads((FIXTURE / "expected.json").read_text())["splits"]
        digest = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
        return {
            "model": {"path": str(model_dir), "weights_sha256": digest, "config_sha256": ""},
            "dataset": {"name": str(data_dir), "config": CONFIG},
            "metric": "Acc@0.5",
            "splits": {
                s: {"accuracy": official[f"unc/{s}"]["acc_at_0.5"], "num_samples": official[f"unc/{s}"]["n"]}
                for s in SPLITS
            },
        }
    return evaluate_model(str(model_dir), str(data_dir), CONFIG, list(SPLITS))


def main() -> None:
    from clipvg_hf.convert_original_checkpoint import main as convert
    from clipvg_hf.data import convert_pack

    with tempfile.TemporaryDirectory() as scratch, running_hub() as (endpoint, state):
        work = Path(scratch)
        assert convert(["--checkpoint", str(FIXTURE / "checkpoint.pth"), "--output_dir", str(work / "model")]) == 0
        convert_pack(
            FIXTURE / "splits", FIXTURE / "image_data", work / "data", "unsup-single", ["unc", "referit"], num_shards=2
        )
        (work / "results.json").write_text(json.dumps(fixture_results(work / "model", work / "data")))
        convert_pack(HIVG_FIXTURE / "splits", FIXTURE / "image_data", work / "hivg_data", "full", ["unc"])
        sizes = json.loads((HIVG_FIXTURE / "expected.json").read_text())["config"]
        heads = {"text_config": {"num_attention_heads": sizes["theads"]}}
        heads["vision_config"] = {"num_attention_heads": sizes["vheads"]}
        (work / "clip_config.json").write_text(json.dumps(heads))
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": scratch,
            "HF_HOME": str(work / "hf"),
            "HF_ENDPOINT": endpoint,
            "HF_TOKEN": DEFAULT_TOKEN,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }
        for args in (
            [
                "model",
                "--model_dir",
                str(work / "model"),
                "--repo_id",
                MODEL_REPO,
                "--results",
                str(work / "results.json"),
                "--dataset_id",
                DATA_REPO,
            ],
            ["dataset", "--data_dir", str(work / "data"), "--repo_id", DATA_REPO],
            [
                "release",
                "--checkpoint",
                str(HIVG_FIXTURE / "checkpoint.pth"),
                "--dataset",
                str(work / "hivg_data"),
                "--dataset_config",
                HIVG_CONFIG,
                *(f"--split={split}" for split in SPLITS),
                "--repo_id",
                HIVG_REPO,
                "--work_dir",
                str(work / "hivg"),
                "--dataset_id",
                HIVG_DATA_REPO,
                "--clip_config",
                str(work / "clip_config.json"),
                "--merge_lora",
            ],
        ):
            subprocess.run([sys.executable, str(ROOT / "push_to_hub.py"), *args], env=env, check=True, cwd=ROOT)
        cards = (
            ("model", MODEL_REPO, "model_card.md"),
            ("dataset", DATA_REPO, "dataset_card.md"),
            ("model", HIVG_REPO, "model_card_hivg.md"),
        )
        for repo_type, repo_id, name in cards:
            readme = state.repos[(repo_type, repo_id)].snapshot("main")[1]["README.md"].content
            (HERE / name).write_bytes(readme)
            print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
