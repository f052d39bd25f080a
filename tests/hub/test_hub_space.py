"""``push_to_hub.py space``: the staged Space (dry run), its push to the loopback Hub stand-in after the model's, and
the pushed Space's own code grounding with the pushed model in a fresh process where clipvg_hf cannot be imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clipvg_hf.commands.push import main as push_main

from conftest import BLOCK_PACKAGE
from utils.hub_server import client_env, running_hub

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_REPO, SPACE_REPO = "org/clip-vg-tiny", "org/clip-vg-tiny-demo"
EXPRESSIONS = ["the pink cake on the left", "the chocolate cake with strawberries"]
SPACE_FILES = {
    "README.md",
    "app.py",
    "requirements.txt",
    "space_config.json",
    "examples/LICENSES.md",
    "examples/coco_060623.jpg",
    "examples/vg1.jpg",
    "examples/vg2.jpg",
    "grounding_pipeline/__init__.py",
    "grounding_pipeline/pipelines.py",
}

#: Run from inside a downloaded Space folder: its app's pipeline on the Hub model, boxes as JSON on stdout.
SPACE_RUN = (
    BLOCK_PACKAGE
    + """
import json, sys
sys.path.insert(0, ".")
import app
assert app.REMOTE_CODE
grounder = app.load_grounder(json.load(open("space_config.json"))["model_id"])
print(json.dumps(grounder("examples/vg2.jpg", text=sys.argv[1:])))
"""
)


def hub_process_env(endpoint: str, home: Path) -> dict[str, str]:
    """A process that talks to the stand-in (set before any HF library is imported), with an empty cache."""
    return client_env(endpoint, home, GRADIO_ANALYTICS_ENABLED="False", PYTHONPATH=str(REPO_ROOT))


def run_together(jobs: list[tuple[list[str], Path, int]], env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """Run independent Python processes at once; each (args, cwd, expected exit status)."""
    procs = [
        subprocess.Popen(
            [sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for args, cwd, _ in jobs
    ]
    results = []
    for proc, (args, _, expect) in zip(procs, jobs, strict=True):
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == expect, f"{args[:2]} rc={proc.returncode}\n{stdout[-2000:]}\n{stderr[-4000:]}"
        results.append(subprocess.CompletedProcess(args, proc.returncode, stdout, stderr))
    return results


def test_dry_run_stages_app_pipeline_examples_and_a_gradio_card(tmp_path, capsys):
    assert push_main(["space", "--model_id", MODEL_REPO, "--repo_id", SPACE_REPO, "--dry_run", str(tmp_path)]) == 0
    assert "space org/clip-vg-tiny-demo" in capsys.readouterr().out
    files = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert SPACE_FILES <= files
    assert (tmp_path / "app.py").read_bytes() == (REPO_ROOT / "clipvg_hf" / "app.py").read_bytes()
    assert json.loads((tmp_path / "space_config.json").read_text()) == {"model_id": MODEL_REPO}
    meta = yaml.safe_load((tmp_path / "README.md").read_text().split("---")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["models"] == [MODEL_REPO]
    requirements = (tmp_path / "requirements.txt").read_text().split()
    assert any(r.startswith("transformers") for r in requirements) and not any("clipvg" in r for r in requirements)
    for name in files:
        if name.endswith(".py"):  # nothing staged imports the package
            lines = (tmp_path / name).read_text().splitlines()
            assert not [
                line
                for line in lines
                if line.lstrip().startswith(("import clipvg_hf", "from clipvg_hf")) and name != "app.py"
            ], name


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        push_main(["space", "--model_id", "bad id", "--repo_id", SPACE_REPO, "--dry_run", str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: malformed repo id 'bad id'")
    with pytest.raises(SystemExit) as exit_info:
        push_main(["space", "--model_id", MODEL_REPO])
    assert exit_info.value.code == 2 and "required: --repo_id" in capsys.readouterr().err


@pytest.mark.slow
def test_push_after_the_model_and_run_without_the_package(converted_dir, tmp_path):
    """A Space push refuses a model that is not on the Hub; after the model's push it goes up, and its code
    grounds with that model."""
    from transformers import pipeline

    import clipvg_hf  # noqa: F401  (registers the pipeline in this process)

    with running_hub() as (endpoint, state):
        env = hub_process_env(endpoint, tmp_path / "home")
        space = ["push_to_hub.py", "space", "--repo_id", SPACE_REPO, "--model_id"]
        refused, _ = run_together(
            [
                ([*space, "org/never-pushed"], REPO_ROOT, 2),
                (
                    ["push_to_hub.py", "model", "--model_dir", str(converted_dir), "--repo_id", MODEL_REPO],
                    REPO_ROOT,
                    0,
                ),
            ],
            env,
        )
        assert "error: model org/never-pushed is not on the Hub" in refused.stderr
        run_together([([*space, MODEL_REPO], REPO_ROOT, 0)], env)
        repo = state.repos[("space", SPACE_REPO)]
        assert SPACE_FILES <= set(repo.snapshot("main")[1])
        folder = tmp_path / "space"
        for path, stored in repo.snapshot("main")[1].items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(stored.content)
        (result,) = run_together(
            [(["-c", SPACE_RUN, *EXPRESSIONS], folder, 0)], env | {"HF_HOME": str(tmp_path / "fresh")}
        )
    from_space = json.loads(result.stdout.strip().splitlines()[-1])
    local = pipeline("visual-grounding", model=str(converted_dir))(
        str(REPO_ROOT / "clipvg_hf/examples/vg2.jpg"), text=EXPRESSIONS
    )
    assert [r["label"] for r in from_space] == EXPRESSIONS
    for theirs, ours in zip(from_space, local, strict=True):
        assert theirs["box"] == pytest.approx(ours["box"], abs=1e-3)


def test_dry_run_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    out = tmp_path / "space"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        push_main(["space", "--model_id", MODEL_REPO, "--repo_id", SPACE_REPO, "--dry_run", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: {out} exists and is not an empty folder; choose a new folder for the staged Space\n"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
