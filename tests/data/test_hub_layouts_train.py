"""clipvg-train reads a Hub REC layout folder (jxu124/refcoco: images under --image_root) for its train and
validation splits, for one epoch under two processes."""

import json
import subprocess

from conftest import torchrun
from utils.hub_layout_factory import fixture_rows, layout_table, write_layout_folder
from utils.paths import COCO_IMAGES, REPO_ROOT


def test_two_processes_train_an_epoch_on_a_jxu124_refcoco_folder(converted_dir, tmp_path):
    folder = write_layout_folder(
        tmp_path / "jxu",
        "jxu124/refcoco",
        {
            "train": layout_table("jxu124/refcoco", fixture_rows("val"), "train"),
            "validation": layout_table("jxu124/refcoco", fixture_rows("testA"), "val"),
        },
    )
    out = tmp_path / "run"
    args = ["--model_name_or_path", str(converted_dir), "--dataset", str(folder), "--image_root", str(COCO_IMAGES)]
    args += ["--val_split", "validation", "--output_dir", str(out), "--num_epochs", "1", "--num_workers", "0"]
    args += ["--no_aug_crop", "--cpu", "--per_device_batch_size", "2"]
    run = subprocess.run(
        [*torchrun(2), "-m", "clipvg_hf.train", *args], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (
        "split 'train' (layout jxu124/refcoco): 18 source rows, 18 expressions in, 18 kept on 13 images" in run.stdout
    )
    assert "18 training expressions, 3 validation images" in run.stdout and "2 process(es)" in run.stdout
    (record,) = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert record["global_step"] == 4 and 0.0 <= record["validation_accuracy"] <= 1.0  # 18 / (2 x 2) per step
    assert (out / "best" / "model.safetensors").is_file()
