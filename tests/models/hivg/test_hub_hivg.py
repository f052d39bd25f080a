"""Staging a HiVG model folder for the Hub: its remote code (with the CLIP-VG files it imports), auto_map, card."""

import json

import torch
from _hivg_fixture import converted, split_inputs

from clipvg_hf import CLIPVGProcessor
from clipvg_hf.hub.staging import prepare_model_folder


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
        "README.md",
        "model.safetensors",
    ):
        assert (staged / name).is_file(), name
    from transformers import AutoModel

    model = AutoModel.from_pretrained(staged).eval()
    inputs = split_inputs("unc/testA")
    with torch.no_grad():
        assert torch.equal(model(**inputs).pred_boxes, converted("unc", merge_lora=True)(**inputs).pred_boxes)
