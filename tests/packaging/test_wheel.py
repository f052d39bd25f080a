"""The built wheel, installed outside the checkout, runs the demo and SSA (nothing reaches back into the checkout)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_curriculum_pipeline import CONFIG, tiny_config_file

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package built as a wheel from a copy of the sources and ``pip install --no-deps --target``-ed."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    shutil.copytree(ROOT / "clipvg_hf", source / "clipvg_hf", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(base / "dist"), str(source)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = (base / "dist").glob("clipvg_hf-*.whl")
    target = base / "target"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return target


def _env(target: Path) -> dict[str, str]:
    """Only the installed copy on the path (it comes before the editable install of the checkout)."""
    return {**os.environ, "PYTHONPATH": str(target), "PYTHONNOUSERSITE": "1"}


def test_wheel_holds_the_package_data_and_console_scripts(installed, tmp_path):
    for name in (
        "assets/bpe_simple_vocab_16e6.txt.gz",
        "hub/templates/model_card.md",
        "hub/templates/dataset_card.md",
    ):
        assert (installed / "clipvg_hf" / name).is_file(), name
    assert not (installed / "train.py").exists() and not (installed / "tests").exists()
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import clipvg_hf, clipvg_hf.train, sys; print(clipvg_hf.__file__); "
            "print(any(p.rstrip('/') == %r for p in sys.path))" % str(ROOT),
        ],
        env=_env(installed),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    where, checkout_on_path = probe.stdout.split()
    assert Path(where).is_relative_to(installed) and checkout_on_path == "False"
    for script in (
        "clipvg-train",
        "clipvg-evaluate",
        "clipvg-predict",
        "clipvg-convert-checkpoint",
        "clipvg-convert-splits",
        "clipvg-curriculum",
        "clipvg-push",
        "clipvg-demo",
    ):
        assert (installed / "bin" / script).is_file(), script


def test_installed_demo_runs_from_another_folder(installed, tmp_path):
    out = tmp_path / "demo"
    run = subprocess.run(
        [
            str(installed / "bin" / "clipvg-demo"),
            "--output_dir",
            str(out),
            "--train_images",
            "16",
            "--val_images",
            "4",
            "--test_images",
            "2",
            "--epochs",
            "1",
            "--batch_size",
            "8",
        ],
        env=_env(installed),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert run.returncode == (0 if summary["reached"] else 1), run.stderr[-3000:]
    assert (out / "run" / "best" / "model.safetensors").is_file() and (out / "predictions.png").is_file()


def test_installed_ssa_trains_one_threshold(installed, converted_dir, fixture_dataset, tmp_path):
    out = tmp_path / "ssa"
    train_args = [
        "--config_file",
        str(tiny_config_file(tmp_path / "tiny.json")),
        "--num_epochs",
        "1",
        "--per_device_batch_size",
        "4",
        "--eval_batch_size",
        "32",
        "--num_workers",
        "0",
        "--cpu",
        "--no_aug_crop",
        "--no_aug_scale",
        "--keep_checkpoints",
        "0",
    ]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "clipvg_hf.curriculum",
            "ssa",
            "--dataset",
            str(fixture_dataset),
            "--dataset_config",
            CONFIG,
            "--output_dir",
            str(out),
            "--measurer",
            str(converted_dir),
            "--thresholds",
            "0.3",
            "--search",
            "grid",
            "--score_args",
            "--cpu --no_plot",
            "--",
            *train_args,
        ],
        env=_env(installed),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "ssa.json").read_text())
    assert report["trainings"]["search"] == 1 and [p["h"] for p in report["curve"]] == [0.3]
    assert (Path(report["curve"][0]["model_dir"]) / "model.safetensors").is_file()
