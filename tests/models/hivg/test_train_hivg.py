"""Training HiVG with clipvg_hf.train: a warm-up run from a config, then HiLoRA stage 1 from its best model."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clipvg_hf.commands.train import main as train_main

from _hivg_fixture import converted, one_thread

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def _args(dataset, out, *extra):
    return [
        "--model_family",
        "hivg",
        "--dataset",
        str(dataset),
        "--dataset_config",
        "refcoco-unsup-single",
        "--output_dir",
        str(out),
        "--num_epochs",
        "1",
        "--num_workers",
        "0",
        "--no_aug_crop",
        "--cpu",
        "--per_device_batch_size",
        "4",
        *extra,
    ]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_warm_up_then_hilora_stage_1(fixture_dataset, tmp_path):
    config = converted("unc").config.to_dict()
    config.update(hilora_stage=0, fusion_dropout=0.0)
    config_file = tmp_path / "hivg_config.json"
    config_file.write_text(json.dumps(config))
    warm = tmp_path / "stage0"
    train_main(_args(fixture_dataset, warm, "--config_file", str(config_file)))
    stage0 = _weights(warm / "best")
    assert json.loads((warm / "best" / "config.json").read_text())["hilora_stage"] == 0

    stage1 = tmp_path / "stage1"
    train_main(_args(fixture_dataset, stage1, "--model_name_or_path", str(warm / "best"), "--hilora_stage", "1"))
    after = _weights(stage1 / "best")
    assert json.loads((stage1 / "best" / "config.json").read_text())["hilora_stage"] == 1
    changed = {k for k in stage0 if not torch.equal(stage0[k], after[k])}
    text_lora = {k for k in stage0 if k.startswith("clip.text_model.") and ".lora_" in k}
    assert text_lora and text_lora <= changed  # stage 1 trains the text LoRA (the warm-up did not) ...
    assert not {k for k in changed if k.startswith("clip.") and ".lora_" not in k}  # ... never CLIP's own weights
    assert any(k.startswith("bridges.") for k in changed) and "reg_token" in changed
    log = [json.loads(line) for line in (stage1 / "log.jsonl").read_text().splitlines()]
    assert log[-1]["n_parameters"] > json.loads((warm / "log.jsonl").read_text().splitlines()[-1])["n_parameters"]


def test_family_mismatch_is_refused(fixture_dataset, tmp_path, capsys):
    folder = tmp_path / "hivg"
    converted("unc").save_pretrained(folder)
    argv = _args(fixture_dataset, tmp_path / "run", "--model_name_or_path", str(folder))
    argv[argv.index("hivg")] = "clipvg"
    with pytest.raises(SystemExit) as exit:
        train_main(argv)
    assert exit.value.code == 2 and "--model_family hivg" in capsys.readouterr().err
