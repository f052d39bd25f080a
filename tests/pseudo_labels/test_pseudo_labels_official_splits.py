"""``clipvg-pseudo-label --official_splits``: the generated labels as the official CLIP-VG split files, read back with
``torch.load(weights_only=True)`` and through the project's split converter (a closed loop), in each row layout, from
a datasets input, from two processes; refused targets."""

import os
import subprocess

import datasets
import pytest
import torch
from test_pseudo_cli import _args, _expressions
from test_pseudo_cli import setup as setup  # the fixture: image folder and tiny models

from clipvg_hf.commands.convert_splits import main as convert_main
from clipvg_hf.commands.pseudo_label import main, pseudo_label
from clipvg_hf.pseudo_labels.official_splits import PLACEHOLDER

from conftest import torchrun

SOURCES = ("template", "relation", "caption")


@pytest.fixture(scope="module")
def official(setup):
    out, target = setup["root"] / "out_official", setup["root"] / "official"
    summary = pseudo_label(_args(setup, out, "--official_splits", str(target)))
    return out, target, summary


def _generated(out, config, split):
    """(file name, expression, box, source, row index) of a generated split, in row order."""
    return sorted(_expressions(out, config, split), key=lambda r: r[4])


def _official_files(target, key):
    single = target / "unsup_single_source" / key
    multi = target / "unsup_multi_source" / key
    separate = {s: multi / "train_separate" / f"{n}_{key}_train_pseudo_{s}.pth" for n, s in enumerate(SOURCES, 1)}
    return single / f"{key}_train_pseudo.pth", multi / f"{key}_train_pseudo.pth", separate


def _load(path):
    return torch.load(path, weights_only=True)  # plain Python rows: no allow-list


def test_files_hold_the_generated_rows_in_the_referit_layout(official, setup):
    out, target, summary = official
    counts = summary["expressions"]
    assert counts["template"] > 0 and counts["relation"] > 0 and counts["caption"] > 0
    single, merged, separate = _official_files(target, "referit")

    def rows(generated):
        return [[f, PLACEHOLDER, list(b), t, PLACEHOLDER] for f, t, b, _, _ in generated]

    assert _load(single) == rows(_generated(out, "photos-unsup-single", "train_pseudo"))
    multi = _generated(out, "photos-unsup-multi", "train_pseudo")
    assert _load(merged) == rows(multi)
    for source, path in separate.items():
        part = _load(path)
        assert part == rows(_generated(out, "photos-unsup-multi", f"train_{source}"))
        assert len(part) == counts[source] == sum(r[3] == source for r in multi)
    assert summary["official_splits"]["files"][f"unsup_multi_source/referit/{merged.name}"] == len(multi)
    images = target / "image_data" / "referit" / "images"
    assert images.is_symlink() and images.resolve() == setup["images"].resolve()  # linked, not copied
    assert all((images / r[0]).is_file() for r in _load(merged))
    readme = (target / "README.md").read_text()
    command = f"--dataset referit --data_root {target / 'image_data'} --split_root {target / 'unsup_multi_source'}"
    assert summary["official_splits"]["original_code"]["multi"] == command and command in readme
    assert not list(target.rglob("*.tmp"))


@pytest.mark.parametrize("setting", ["unsup-single", "unsup-multi"])
def test_converter_reads_the_official_files_back_as_the_generated_dataset(official, setting, tmp_path, capsys):
    out, target, _ = official
    root = target / ("unsup_single_source" if setting == "unsup-single" else "unsup_multi_source")
    code = convert_main(
        [
            *("--split_root", str(root), "--image_root", str(target / "image_data")),
            *("--setting", setting, "--datasets", "referit", "--output_dir", str(tmp_path), "--num_shards", "1"),
        ]
    )
    assert code == 0 and "total" in capsys.readouterr().out
    config = f"photos-{setting}"
    back = _generated(tmp_path, f"referit-{setting}", "train_pseudo")
    assert back == _generated(out, config, "train_pseudo")


@pytest.mark.parametrize("key", ["unc", "flickr"])
def test_coco_and_flickr_layouts(official, setup, key, tmp_path):
    out, _, _ = official
    target = tmp_path / key
    summary = pseudo_label(
        ["--labels_only", "--output_dir", str(out), "--official_splits", str(target), "--official_dataset", key]
    )
    multi = _generated(out, "photos-unsup-multi", "train_pseudo")
    _, merged, _ = _official_files(target, key)
    rows = _load(merged)
    assert len(rows) == len(multi) == sum(summary["expressions"].values())
    for row, (file_name, text, (x1, y1, x2, y2), _, _) in zip(rows, multi):
        if key == "flickr":
            assert row == [file_name, [x1, y1, x2, y2], text]
        else:
            assert row == [file_name, PLACEHOLDER, [x1, y1, x2 - x1, y2 - y1], text, PLACEHOLDER]
    folder = "other/images/mscoco/images/train2014" if key == "unc" else "Flickr30k/flickr30k-images"
    assert (target / "image_data" / folder).resolve() == setup["images"].resolve()
    convert_main(
        [
            *("--split_root", str(target / "unsup_multi_source"), "--image_root", str(target / "image_data")),
            *("--setting", "unsup-multi", "--datasets", key, "--output_dir", str(tmp_path / "hf")),
        ]
    )
    name = "refcoco" if key == "unc" else "flickr30k"
    back = _generated(tmp_path / "hf", f"{name}-unsup-multi", "train_pseudo")
    assert [(f, t, s, i) for f, t, _, s, i in back] == [(f, t, s, i) for f, t, _, s, i in multi]
    for (*_, box, _, _), (*_, want, _, _) in zip(back, multi):  # x + w in float64 may round the last bit
        assert box == pytest.approx(want, abs=1e-9)


def _image_dataset(folder, files, names):
    """A local parquet image dataset (image bytes and a ``name`` column) of the given files; returns its folder."""
    (folder / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(
        {"image": [{"bytes": p.read_bytes(), "path": p.name} for p in files], "name": names},
        features=datasets.Features({"image": datasets.Image(), "name": datasets.Value("string")}),
    ).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


def _dataset_args(setup, folder, out, target):
    args = _args(setup, out, "--name", "photos", "--official_splits", str(target))[2:]
    return ["--dataset", str(folder), "--streaming", "--name_column", "name", *args]


def test_datasets_input_writes_its_images_once(official, setup, tmp_path):
    out, target, _ = official
    files = sorted(p for p in setup["images"].iterdir() if p.suffix in (".png", ".jpg"))
    data = _image_dataset(tmp_path / "hfdata", files, [p.name for p in files])
    other = tmp_path / "official"
    main(_dataset_args(setup, data, tmp_path / "out", other))
    _, merged, _ = _official_files(other, "referit")
    assert _load(merged) == _load(_official_files(target, "referit")[1])
    images = other / "image_data" / "referit" / "images"
    assert not images.is_symlink()
    written = sorted(p.name for p in images.iterdir())
    assert written == sorted({r[0] for r in _load(merged)})
    assert all((images / n).read_bytes() == (setup["images"] / n).read_bytes() for n in written)


def test_image_names_leaving_the_image_folder_are_refused(setup, tmp_path, capsys):
    files = sorted(p for p in setup["images"].iterdir() if p.suffix == ".png")
    names = [f"../{p.name}" for p in files]  # a datasets input's name column may say anything
    data = _image_dataset(tmp_path / "hfdata", files, names)
    with pytest.raises(SystemExit) as err:
        main(_dataset_args(setup, data, tmp_path / "out", tmp_path / "official"))
    assert err.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: --official_splits: image path '../") and "leaves the image folder" in line
    assert not (tmp_path / "official").exists()


@pytest.mark.parametrize("case", ["file", "holds_splits", "bad_key", "overwrite_alone"])
def test_bad_targets_are_refused_before_any_work(official, setup, tmp_path, capsys, case):
    _, target, _ = official
    stamps = {p: p.stat().st_mtime_ns for p in target.rglob("*.pth")}
    extra = {
        "file": ["--official_splits", str(setup["root"] / "attributes.txt")],
        "holds_splits": ["--official_splits", str(target)],
        "bad_key": ["--official_splits", str(tmp_path / "new"), "--official_dataset", "mixup"],
        "overwrite_alone": ["--overwrite_official_splits"],
    }[case]
    message = {
        "file": "is a file, not a folder",
        "holds_splits": "already holds split files (unsup_single_source/referit/referit_train_pseudo.pth and 4 more)",
        "bad_key": "--official_dataset 'mixup': expected one of",
        "overwrite_alone": "need --official_splits DIR",
    }[case]
    with pytest.raises(SystemExit) as err:
        main(_args(setup, tmp_path / "out", *extra))
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "new").exists()
    assert {p: p.stat().st_mtime_ns for p in target.rglob("*.pth")} == stamps


def test_overwrite_replaces_the_files_and_drops_a_source_left_empty(official):
    out, target, _ = official
    summary = pseudo_label(
        [
            *("--labels_only", "--output_dir", str(out), "--relations", "none"),
            *("--official_splits", str(target), "--overwrite_official_splits"),
        ]
    )
    single, merged, separate = _official_files(target, "referit")
    assert not separate["relation"].exists() and separate["template"].is_file()
    assert len(_load(merged)) == summary["expressions"]["template"] + summary["expressions"]["caption"]
    main(["--labels_only", "--output_dir", str(out), "--official_splits", str(target), "--overwrite_official_splits"])
    assert separate["relation"].is_file()


@pytest.mark.slow
def test_two_processes_write_the_files_of_one_once(official, setup, tmp_path):
    _, target, _ = official
    other = tmp_path / "official"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = _args(setup, tmp_path / "two", "--official_splits", str(other))
    command = [*torchrun(2), "-m", "clipvg_hf.pseudo_labels", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"official_splits"') == 1  # the main process alone wrote and reported them
    want = sorted(p.relative_to(target) for p in target.rglob("*.pth"))
    assert sorted(p.relative_to(other) for p in other.rglob("*.pth")) == want
    for relative in want:
        assert _load(other / relative) == _load(target / relative)
