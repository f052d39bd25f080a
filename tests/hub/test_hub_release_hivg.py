"""``clipvg-push release`` on an official HiVG checkpoint (the HiVG parity fixture's): the family is recognised by the
state dict, the checkpoint converted, evaluated and published with HiVG's card holding exactly the evaluated
numbers, as a dry run and as an upload to the loopback Hub stand-in, and the result loads back as remote code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from huggingface_hub import ModelCard

from clipvg_hf.commands.push import main as push_main
from clipvg_hf.conversion.common import load_original_checkpoint

from conftest import BLOCK_PACKAGE, CHECKPOINT
from models.hivg._hivg_fixture import CHECKPOINTS, clip_config, converted, expected_json, split_inputs
from utils.hub_server import client_env, running_hub
from utils.paths import HIVG_TINY_DIR, REPO_ROOT, TINY_DIR

CONFIG, SPLITS, DATA_ID = "refcoco-full", ("val", "testA"), "org/hivg-grounding-tiny"
STAGED_REPO, RELEASE_REPO = "org/hivg-tiny-staged", "org/hivg-tiny-release"

#: A fresh process without clipvg_hf: the staged folder (LoRA adapters) as remote code, then, with peft made
#: unavailable, the uploaded merged repo; per model its class, module, LoRA state and boxes as JSON.
LOAD_AS_REMOTE_CODE = """
import json, sys, torch
from transformers import AutoModel
inputs = torch.load(sys.argv[1], weights_only=True)
out = []
for source in sys.argv[2:]:
    model = AutoModel.from_pretrained(source, trust_remote_code=True).eval()
    with torch.no_grad():
        boxes = model(**inputs).pred_boxes
    lora = sum(".lora_" in name for name, _ in model.named_parameters())
    out.append(dict(cls=type(model).__name__, module=type(model).__module__, adapters=model.config.lora_adapters,
                    lora_parameters=lora, boxes=boxes.tolist()))
    for name in [m for m in sys.modules if m == "peft" or m.startswith("peft.")]:
        del sys.modules[name]
    sys.modules["peft"] = None  # from here on peft is not installed: find_spec gives None, import fails
print(json.dumps(out))
"""


def release_argv(work, *extra: str) -> list[str]:
    """The release command line for the unc fixture checkpoint, evaluated on both fixture splits."""
    argv = ["release", "--checkpoint", str(CHECKPOINTS["unc"]), "--dataset", str(work.parent / "data")]
    argv += ["--dataset_config", CONFIG, *(f"--split={split}" for split in SPLITS), "--work_dir", str(work)]
    return [*argv, "--dataset_id", DATA_ID, *extra]


@pytest.fixture(scope="module")
def release_root(tmp_path_factory):
    """A folder holding ``data/`` (the HiVG fixture's unc split files, converted) and ``clip_config.json``."""
    from clipvg_hf.data import convert_pack

    root = tmp_path_factory.mktemp("hivg_release")
    convert_pack(HIVG_TINY_DIR / "splits", TINY_DIR / "image_data", root / "data", "full", ["unc"])
    (root / "clip_config.json").write_text(json.dumps(clip_config()))
    return root


@pytest.fixture(scope="module")
def dry_release(release_root):
    """``clipvg-push release --dry_run`` of the HiVG checkpoint (adapters kept); returns its work dir."""
    work = release_root / "dry"
    argv = release_argv(work, "--repo_id", STAGED_REPO, "--clip_config", str(release_root / "clip_config.json"))
    assert push_main([*argv, "--dry_run"]) == 0
    return work


def card_numbers(card: ModelCard) -> dict[str, dict[str, float]]:
    """Split -> metric name -> value, from the card's model-index."""
    numbers: dict[str, dict[str, float]] = {}
    for result in card.data.eval_results:
        numbers.setdefault(result.dataset_split, {})[result.metric_name] = result.metric_value
    return numbers


def check_card(card: ModelCard, results: dict, work) -> None:
    """HiVG's card, naming the checkpoint, with exactly the numbers of ``results`` and no local path."""
    assert card_numbers(card) == {
        split: {"Acc@0.5": s["accuracy"], "mean IoU": s["mean_iou"]} for split, s in results["splits"].items()
    }
    for split, s in results["splits"].items():
        row = f"| {split} | {100 * s['accuracy']:.2f} | {s['mean_iou']:.4f} | {s['num_samples']} |"
        assert row in card.text
    assert (
        "hivg" in card.data.tags and "@inproceedings{xiao2024hivg" in card.text and "Cross-modal bridges" in card.text
    )
    assert "Converted from the official checkpoint `checkpoint.pth` with `clipvg_hf.conversion.hivg`" in card.text
    assert str(work) not in str(card) and card.data.datasets == [DATA_ID]


def test_dry_run_converts_evaluates_and_stages_the_hivg_card(dry_release):
    from transformers import AutoModel

    results = json.loads((dry_release / "results.json").read_text())
    official = expected_json()["splits"]
    for split in SPLITS:  # the per-sample semantics, HiVG's default here, gives the official batch-size-1 numbers
        assert results["splits"][split]["accuracy"] == official[f"unc/{split}"]["acc_at_0.5_bs1"]
        assert results["splits"][split]["num_samples"] == official[f"unc/{split}"]["n"]
    staged = dry_release / "upload"
    card = ModelCard.load(staged / "README.md")
    check_card(card, results, dry_release)
    assert "kept as separate adapters" in card.text and "`peft` is needed too" in card.text
    assert "the weights are the official ones, unchanged." in card.text
    config = json.loads((staged / "config.json").read_text())
    assert config["model_type"] == "hivg" and config["auto_map"]["AutoModel"] == "modeling_hivg.HiVGForGrounding"
    assert (staged / "model.safetensors").read_bytes() == (dry_release / "model" / "model.safetensors").read_bytes()
    model = AutoModel.from_pretrained(staged).eval()  # the package route; remote code: the slow test below
    inputs = split_inputs("unc/testA")
    with torch.no_grad():
        assert torch.equal(model(**inputs).pred_boxes, converted("unc")(**inputs).pred_boxes)


@pytest.mark.slow
def test_merged_release_uploads_and_loads_as_remote_code_without_peft(release_root, dry_release, tmp_path):
    work = release_root / "merged"
    heads = str(release_root / "clip_config.json")
    argv = ["push_to_hub.py", *release_argv(work, "--repo_id", RELEASE_REPO, "--clip_config", heads, "--merge_lora")]
    inputs = split_inputs("unc/testA")
    torch.save(inputs, tmp_path / "inputs.pt")
    with running_hub() as (endpoint, state):
        env = client_env(endpoint, tmp_path / "push", PYTHONPATH=str(REPO_ROOT))
        push = subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        assert push.returncode == 0, push.stderr[-4000:]
        assert f"model {RELEASE_REPO}:" in push.stdout and "uploaded to" in push.stdout
        load = [sys.executable, "-c", BLOCK_PACKAGE + LOAD_AS_REMOTE_CODE, str(tmp_path / "inputs.pt")]
        load += [str(dry_release / "upload"), RELEASE_REPO]
        env = client_env(endpoint, tmp_path / "load", OMP_NUM_THREADS="1")
        loaded = subprocess.run(load, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert loaded.returncode == 0, loaded.stderr[-4000:]
        files = state.repos[("model", RELEASE_REPO)].snapshot("main")[1]
        (tmp_path / "README.md").write_bytes(files["README.md"].content)
    results = json.loads((work / "results.json").read_text())
    assert results["model"]["weights_sha256"] == files["model.safetensors"].sha256
    adapters = json.loads((dry_release / "results.json").read_text())["splits"]
    for split, scores in results["splits"].items():  # merging moves the boxes by ~1e-7
        assert scores["accuracy"] == adapters[split]["accuracy"]
        assert scores["mean_iou"] == pytest.approx(adapters[split]["mean_iou"], abs=1e-6)
    card = ModelCard.load(tmp_path / "README.md")
    check_card(card, results, work)
    assert "merged into the weights" in card.text and "`peft` is needed" not in card.text
    assert "the weights are the official ones, with each LoRA adapter merged into its layer" in card.text
    assert json.loads(files["config.json"].content)["lora_adapters"] is False
    staged, uploaded = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert staged["adapters"] is True and staged["lora_parameters"] > 0
    assert uploaded["adapters"] is False and uploaded["lora_parameters"] == 0
    with torch.no_grad():
        references = converted("unc")(**inputs).pred_boxes, converted("unc", merge_lora=True)(**inputs).pred_boxes
    for remote, reference in zip((staged, uploaded), references, strict=True):
        assert remote["cls"] == "HiVGForGrounding" and remote["module"].startswith("transformers_modules.")
        torch.testing.assert_close(torch.tensor(remote["boxes"]), reference, atol=1e-6, rtol=0)


def test_bridge_overrides_reach_the_released_config(release_root, dry_release):
    """``--bridge_text_source`` / ``--bridge_batch_mixing`` change what the released config stores."""
    work = release_root / "bridge_overrides"
    heads = str(release_root / "clip_config.json")
    argv = release_argv(work, "--repo_id", STAGED_REPO, "--clip_config", heads, "--dry_run")
    assert push_main([*argv, "--bridge_text_source", "mixup", "--bridge_batch_mixing"]) == 0
    default = json.loads((dry_release / "model" / "config.json").read_text())
    changed = json.loads((work / "upload" / "config.json").read_text())
    assert (default["bridge_text_source"], default["bridge_batch_mixing"]) == ("adaptive", False)
    assert (changed["bridge_text_source"], changed["bridge_batch_mixing"]) == ("mixup", True)


def test_bad_clip_config_and_flags_of_the_other_family_are_one_line_errors(release_root, tmp_path, capsys):
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "heads.json").write_text(json.dumps({"text_config": {"num_attention_heads": 0}, "vision_config": {}}))
    three = {"text_config": {"num_attention_heads": 2}, "vision_config": {"num_attention_heads": 3}}
    (tmp_path / "three.json").write_text(json.dumps(three))
    good = str(release_root / "clip_config.json")
    work = release_root / "refused"  # beside the converted data/: the splits are checked before the conversion
    checkpoint = load_original_checkpoint(CHECKPOINTS["unc"])
    checkpoint["model"]["bbox_embed.layers.0.weight"][0, 0] = float("nan")
    torch.save(checkpoint, tmp_path / "nan.pth")
    clipvg = ["--checkpoint", str(CHECKPOINT)]  # a CLIP-VG checkpoint: argparse takes the last --checkpoint
    cases = [
        (
            ["--clip_config", str(tmp_path / "missing.json")],
            f"--clip_config {tmp_path / 'missing.json'}: no such file",
        ),
        (["--clip_config", str(tmp_path / "broken.json")], f"--clip_config {tmp_path / 'broken.json'}: not a JSON"),
        (["--clip_config", str(tmp_path)], f"--clip_config {tmp_path}: cannot be read: Is a directory"),
        (["--clip_config", str(tmp_path / "list.json")], "list.json: not a Hugging Face CLIP config.json"),
        (["--clip_config", str(tmp_path / "heads.json")], "text_config.num_attention_heads is 0, not a positive"),
        (
            ["--clip_config", str(tmp_path / "three.json")],
            f"not a multiple of the number of attention heads (3). (--clip_config {tmp_path / 'three.json'})",
        ),
        ([*clipvg, "--merge_lora"], f"applies only to HiVG checkpoints, and {CHECKPOINT} is released as CLIP-VG (its"),
        ([*clipvg, "--clip_config", good, "--merge_lora"], "--merge_lora and --clip_config apply only to HiVG"),
        (["--family", "clipvg", "--merge_lora"], "is released as CLIP-VG (--family clipvg)"),
        ([*clipvg, "--bridge_batch_mixing"], "--bridge_batch_mixing applies only to HiVG checkpoints"),
        ([*clipvg, "--bridge_text_source", "mixup"], "--bridge_text_source applies only to HiVG checkpoints"),
        (["--family", "clipvg"], "as a CLIP-VG checkpoint: not a CLIP-VG state dict: missing"),
        (["--clip_config", good, "--fusion_num_heads", "4"], "fusion_num_heads=4 disagrees with args.vl_nheads=2"),
        (["--setting", "unsup-single"], "trained with sup_type='full' but the setting is 'unsup-single'"),
        # checked before the conversion, which would leave WORK/model behind and refuse the corrected rerun
        (["--clip_config", good, "--split", "nope"], f"--dataset_config {CONFIG} split 'nope': "),
        (["--checkpoint", str(tmp_path / "nan.pth"), "--clip_config", good], "1 tensors hold NaN or infinite values"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            push_main([*release_argv(work, "--repo_id", STAGED_REPO, "--dry_run"), *extra])
        assert exit_info.value.code == 2, extra
        err = capsys.readouterr().err  # the first split check may print datasets' progress bars before it
        line = err.strip().splitlines()[-1]
        assert line.startswith("error: ") and "Traceback" not in err and message in line, (extra, err)
        assert not work.exists(), extra
