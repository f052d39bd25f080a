"""Staging a HiVG model folder for the Hub: its remote code (with the CLIP-VG files it imports), auto_map, card."""

import json

import torch

from clipvg_hf import CLIPVGProcessor
from clipvg_hf.hub.staging import prepare_model_folder

from _hivg_fixture import converted, split_inputs


def test_a_hivg_folder_stages_with_its_remote_code(tmp_path):
    folder, staged = tmp_path / "hivg", tmp_path / "staged"
    converted("unc", merge_lora=True).save_pretrained(folder)
    CLIPVGProcessor.from_defaults(224).save_pretrained(folder)
    prepare_model_folder(folder, staged, "someone/hivg-tiny")
    config = json.loads((staged / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_hivg.HiVGForGrounding"
    assert config["auto_map"]["AutoConfig"] == "configuration_hivg.HiVGConfig"
    for name in (
        "modeling_hivg.py",
        "configuration_hivg.py",
        "modeling_clipvg.py",
        "configuration_clipvg.py",
        "boxes_clipvg.py",
        "lean_ops_clipvg.py",
        "packing_clipvg.py",
        "README.md",
        "model.safetensors",
    ):
        assert (staged / name).is_file(), name
    from transformers import AutoModel

    model = AutoModel.from_pretrained(staged).eval()
    inputs = split_inputs("unc/testA")
    with torch.no_grad():
        assert torch.equal(model(**inputs).pred_boxes, converted("unc", merge_lora=True)(**inputs).pred_boxes)


def test_model_cards_describe_their_family(tmp_path):
    from huggingface_hub import ModelCard

    from clipvg_hf import CLIPVGConfig
    from clipvg_hf.hub.cards import build_model_card

    folder, staged = tmp_path / "hivg", tmp_path / "staged"
    merged = converted("unc", merge_lora=True)
    merged.save_pretrained(folder)
    CLIPVGProcessor.from_defaults(224).save_pretrained(folder)
    prepare_model_folder(folder, staged, "someone/hivg-tiny", source="best_checkpoint.pth")
    card = ModelCard.load(staged / "README.md")
    assert "hivg" in card.data.tags and "clip-vg" not in card.data.tags
    assert (
        card.text.startswith("\n# hivg-tiny\n\nHiVG visual grounding") and "@inproceedings{xiao2024hivg" in card.text
    )
    assert "@article{xiao2023clip" not in card.text and "CLIP-VG has no confidence head" not in card.text
    assert "Cross-modal bridges in image blocks [0, 3, 7, 11]" in card.text and "text hidden states [12]" in card.text
    assert "merged into the weights" in card.text and "`peft` is needed" not in card.text
    assert "`bridge_batch_mixing=False`, the default" in card.text and "`clipvg_hf.conversion.hivg`" in card.text
    assert f"- Parameters: {sum(p.numel() for p in merged.parameters()):,}." in card.text

    config = converted("unc").config.to_dict()
    config["bridge_batch_mixing"] = True
    text = build_model_card("a/hivg", config, None).text
    assert (
        "`peft` is needed too" in text
        and "kept as separate adapters" in text
        and "sets `bridge_batch_mixing=True`" in text
    )
    clipvg = build_model_card("a/clip-vg", CLIPVGConfig().to_dict(), None)
    assert "clip-vg" in clipvg.data.tags and "@article{xiao2023clip" in clipvg.text and "bridge" not in clipvg.text
