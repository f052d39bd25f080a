"""The one staging writer of dataset folders: a re-conversion killed between splits leaves the old dataset loading
unchanged, a failed writer leaves the folder as it was, a cut swap is repaired by the next run; an output folder
holding another kind of dataset is refused before any work."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from datasets import load_dataset

from clipvg_hf.commands.convert_splits import main
from clipvg_hf.data.staging import dataset_folder_problem, staged_folder, write_text_atomic

from utils.data_factory import build_pack, coco_full_row, coco_pseudo_row, save_split
from utils.paths import REPO_ROOT

CONFIG = "refcoco-unsup-single"
SPLITS = ("train_pseudo", "val", "testA")


def _snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file (links not followed)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def _args(splits: Path, images: Path, out: Path) -> list[str]:
    return [
        *("--split_root", str(splits), "--image_root", str(images), "--output_dir", str(out)),
        *("--setting", "unsup-single", "--datasets", "unc", "--num_shards", "1"),
    ]


def _expressions(out: Path, cache: Path) -> dict[str, list[str]]:
    """Each split's expressions, read through ``datasets.load_dataset`` from the folder's card."""
    return {
        split: [
            e["expression"]
            for row in load_dataset(str(out), CONFIG, split=split, cache_dir=str(cache))
            for e in row["expressions"]
        ]
        for split in SPLITS
    }


def _second_version(splits: Path) -> None:
    """Every split of the pack gets other expressions."""
    save_split(
        splits / "unc" / "unc_train_pseudo.pth",
        [coco_pseudo_row("a.jpg", [40.0, 30.0, 100.0, 100.0], "version two square")],
    )
    save_split(
        splits / "unc" / "unc_val.pth", [coco_full_row("b.png", "1.pth", [10.0, 200.0, 180.0, 190.0], "version two")]
    )
    save_split(splits / "unc" / "unc_testA.pth", [coco_full_row("a.jpg", "3.pth", [40.0, 30.0, 100.0, 100.0], "two")])


# The converter, killed (SIGKILL, no cleanup) right after the first split's shards are written.
KILLED_AFTER_FIRST_SPLIT = textwrap.dedent(
    """
    import os, signal, sys
    import clipvg_hf.data.convert as convert
    from clipvg_hf.commands.convert_splits import main

    write = convert._write_shards

    def write_then_die(*args, **kwargs):
        written = write(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
        return written

    convert._write_shards = write_then_die
    main(sys.argv[1:])
    """
)


def test_a_reconversion_killed_between_splits_leaves_the_old_dataset(tmp_path):
    splits, images = build_pack(tmp_path / "pack")
    out = tmp_path / "hf"
    main(_args(splits, images, out))
    before, rows = _snapshot(out), _expressions(out, tmp_path / "cache1")
    assert rows["train_pseudo"][0] == "white square"
    _second_version(splits)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_FIRST_SPLIT, *_args(splits, images, out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert _snapshot(out) == before  # no split of the new version in place, nothing of the old one gone
    assert _expressions(out, tmp_path / "cache2") == rows
    assert [name.rsplit("-", 1)[0] for name in _siblings(out)] == [".hf.staging"]  # the dead run's, beside it
    main(_args(splits, images, out))  # the rerun removes it and swaps the whole new version in
    assert _siblings(out) == []
    assert _expressions(out, tmp_path / "cache3") == {
        "train_pseudo": ["version two square"],
        "val": ["version two"],
        "testA": ["two"],
    }


def test_a_failing_writer_leaves_the_folder_and_a_finished_one_replaces_it(tmp_path):
    target = tmp_path / "data"
    (target / "config").mkdir(parents=True)
    (target / "config" / "train-00000-of-00001.parquet").write_bytes(b"old shard")
    (target / "README.md").write_text("old card")
    before = _snapshot(target)
    with pytest.raises(RuntimeError), staged_folder(target) as stage:
        write_text_atomic(stage / "README.md", "new card")  # a linked file is replaced, not rewritten
        (stage / "config" / "train-00000-of-00001.parquet").unlink()
        raise RuntimeError("the writer fails")
    assert _snapshot(target) == before and _siblings(target) == []
    with staged_folder(target) as stage:
        write_text_atomic(stage / "README.md", "new card")
        assert (target / "README.md").read_text() == "old card"  # nothing is visible before the swap
    assert (target / "README.md").read_text() == "new card"
    assert (target / "config" / "train-00000-of-00001.parquet").read_bytes() == b"old shard"  # kept
    assert _siblings(target) == []


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_swap_cut_between_its_renames_is_repaired_by_the_next_run(tmp_path):
    target = tmp_path / "data"
    pid = _dead_pid()
    old = tmp_path / f".data.replaced-{pid}"  # a run killed after moving the old version aside
    old.mkdir()
    (old / "README.md").write_text("old card")
    stale = tmp_path / f".data.staging-{pid}"
    stale.mkdir()
    with staged_folder(target) as stage:
        assert (stage / "README.md").read_text() == "old card"  # the next run starts from the old version
    assert (target / "README.md").read_text() == "old card" and _siblings(target) == []


def test_a_linked_output_folder_stays_a_link(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "README.md").write_text("old")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    with staged_folder(link) as stage:
        write_text_atomic(stage / "README.md", "new")
    assert link.is_symlink() and (link / "README.md").read_text() == "new"


def test_folder_kinds(tmp_path):
    assert dataset_folder_problem(tmp_path / "new", "converted") is None
    (tmp_path / "empty").mkdir()
    assert dataset_folder_problem(tmp_path / "empty", "pseudo-labels") is None
    (tmp_path / "file").write_text("x")
    assert "is a file, not a folder" in dataset_folder_problem(tmp_path / "file", "converted")
    pseudo = tmp_path / "pseudo"
    (pseudo / "detections").mkdir(parents=True)  # a first run's detections, before pseudo_labels.json
    assert dataset_folder_problem(pseudo, "pseudo-labels") is None
    assert "holds a pseudo-labels dataset" in dataset_folder_problem(pseudo, "converted")
    card = tmp_path / "card"
    card.mkdir()
    (card / "README.md").write_text("---\n---\n")
    assert "holds another dataset (README.md" in dataset_folder_problem(card, "converted")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a dataset")
    assert dataset_folder_problem(other, "converted") is None


def test_the_converter_refuses_a_pseudo_label_folder(tmp_path, capsys):
    splits, images = build_pack(tmp_path / "pack")
    out = tmp_path / "photos"
    (out / "photos-unsup-single").mkdir(parents=True)
    (out / "photos-unsup-single" / "train_pseudo-00000-of-00001.parquet").write_bytes(b"labels")
    (out / "pseudo_labels.json").write_text('{"name": "photos"}\n')
    (out / "README.md").write_text("pseudo-label card")
    before = _snapshot(out)
    with pytest.raises(SystemExit) as err:
        main(_args(splits, images, out))
    lines = capsys.readouterr().err.strip().splitlines()
    assert err.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: --output_dir {out} holds a pseudo-labels dataset (pseudo_labels.json")
    assert _snapshot(out) == before and _siblings(out) == []
