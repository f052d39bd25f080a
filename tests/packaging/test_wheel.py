"""The built wheel, installed outside the checkout, runs the demo and SSA (nothing reaches back into the checkout)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from curriculum.test_curriculum_pipeline import CONFIG, tiny_config_file

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ("train", "evaluate", "predict", "convert-checkpoint", "convert-splits", "curriculum", "push", "demo")
pytestmark = pytest.mark.slow


def _run(command: list[str], cwd: Path, target: Path | None = None) -> subprocess.CompletedProcess:
    """``command`` in ``cwd``; with ``target``, only that installed copy of the package on the path (it comes
    before the editable install of the checkout)."""
    env = {**os.environ, "PYTHONNOUSERSITE": "1", **({"PYTHONPATH": str(target)} if target else {})}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package built as a wheel from a copy of the sources and ``pip install --no-deps --target``-ed."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    shutil.copytree(ROOT / "clipvg_hf", source / "clipvg_hf", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    built = _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(base / "dist"), str(source)], base)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (base / "dist").glob("clipvg_hf-*.whl")
    done = _run([*pip, "install", "--no-deps", "--target", str(base / "target"), str(wheel)], base)
    assert done.returncode == 0, done.stderr[-3000:]
    return base / "target"


def test_wheel_holds_the_package_data_and_console_scripts(installed, tmp_path):
    for name in (
        "assets/bpe_simple_vocab_16e6.txt.gz",
        "hub/templates/model_card.md",
        "hub/templates/dataset_card.md",
    ):
        assert (installed / "clipvg_hf" / name).is_file(), name
    assert not (installed / "train.py").exists() and not (installed / "tests").exists()
    probe = _run(
        [
            sys.executable,
            "-c",
            "import clipvg_hf, clipvg_hf.train, sys; print(clipvg_hf.__file__); "
            f"print(any(p.rstrip('/') == {str(ROOT)!r} for p in sys.path))",
        ],
        tmp_path,
        installed,
    )
    where, checkout_on_path = probe.stdout.split()
    assert Path(where).is_relative_to(installed) and checkout_on_path == "False"
    assert all((installed / "bin" / f"clipvg-{name}").is_file() for name in SCRIPTS)


def test_installed_demo_runs_from_another_folder(installed, tmp_path):
    out = tmp_path / "demo"
    sizes = "--train_images 16 --val_images 4 --test_images 2 --epochs 1 --batch_size 8".split()
    run = _run([str(installed / "bin" / "clipvg-demo"), "--output_dir", str(out), *sizes], tmp_path, installed)
    summary = json.loads((out / "summary.json").read_text())
    assert run.returncode == (0 if summary["reached"] else 1), run.stderr[-3000:]
    assert (out / "run" / "best" / "model.safetensors").is_file() and (out / "predictions.png").is_file()


def test_installed_ssa_trains_one_threshold(installed, converted_dir, fixture_dataset, tmp_path):
    out = tmp_path / "ssa"
    train_args = [
        "--config_file",
        str(tiny_config_file(tmp_path / "tiny.json")),
        *"--num_epochs 1 --per_device_batch_size 4 --eval_batch_size 32 --num_workers 0 --cpu".split(),
        *"--no_aug_crop --no_aug_scale --keep_checkpoints 0".split(),
    ]
    ssa = [
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
    ]
    run = _run([sys.executable, "-m", "clipvg_hf.curriculum", "ssa", *ssa, "--", *train_args], tmp_path, installed)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "ssa.json").read_text())
    assert report["trainings"]["search"] == 1 and [p["h"] for p in report["curve"]] == [0.3]
    assert (Path(report["curve"][0]["model_dir"]) / "model.safetensors").is_file()
