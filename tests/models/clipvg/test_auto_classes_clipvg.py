"""Loading a saved CLIP-VG folder in a fresh process: through the package, and as Hub remote code without it."""

import json
import subprocess
import sys
import textwrap

import torch

from conftest import BLOCK_PACKAGE

LOAD_AND_PREDICT = textwrap.dedent("""
    import sys, json, torch
    {prelude}
    from transformers import AutoModel, AutoModelForZeroShotObjectDetection
    results = {{}}
    for auto in (AutoModel, AutoModelForZeroShotObjectDetection):
        model = auto.from_pretrained({folder!r}, {kwargs}).eval()
        g = torch.Generator().manual_seed(0)
        pixels = torch.randn(2, 3, 224, 224, generator=g)
        ids = torch.tensor([[49406, 320, 1929, 49407], [49406, 518, 49407, 49407]])
        mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
        with torch.no_grad():
            boxes = model(pixel_values=pixels, input_ids=ids, attention_mask=mask).pred_boxes
        results[auto.__name__] = dict(module=type(model).__module__, boxes=boxes.tolist(),
                                      trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))
    print(json.dumps(results))
""")


def _run(code, cwd):
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(cwd), "HF_HOME": str(cwd / "hf")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_package_route_and_remote_code_route_give_the_same_boxes(converted_dir, converted_model, tmp_path):
    config = json.loads((converted_dir / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_clipvg.CLIPVGConfig",
        "AutoModel": "modeling_clipvg.CLIPVGForGrounding",
        "AutoModelForZeroShotObjectDetection": "modeling_clipvg.CLIPVGForGrounding",
    }
    package = _run(LOAD_AND_PREDICT.format(prelude="import clipvg_hf", folder=str(converted_dir), kwargs=""), tmp_path)
    remote = _run(
        LOAD_AND_PREDICT.format(prelude=BLOCK_PACKAGE, folder=str(converted_dir), kwargs="trust_remote_code=True"),
        tmp_path,
    )
    expected_trainable = sum(p.numel() for p in converted_model.parameters() if p.requires_grad)
    for name in ("AutoModel", "AutoModelForZeroShotObjectDetection"):
        assert package[name]["module"] == "clipvg_hf.modeling_clipvg"
        assert remote[name]["module"].startswith("transformers_modules.")
        assert package[name]["boxes"] == remote[name]["boxes"]
        assert package[name]["trainable"] == remote[name]["trainable"] == expected_trainable
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        here = converted_model(
            pixel_values=pixels,
            input_ids=torch.tensor([[49406, 320, 1929, 49407], [49406, 518, 49407, 49407]]),
            attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
        ).pred_boxes
    # another process (its own thread count, so its own summation order): equal up to float rounding
    torch.testing.assert_close(torch.tensor(package["AutoModel"]["boxes"]), here, atol=1e-6, rtol=0)


def test_remote_code_files_are_the_package_modules(converted_dir):
    import clipvg_hf.configuration_clipvg as configuration
    import clipvg_hf.modeling_clipvg as modeling

    for module in (configuration, modeling):
        shipped = converted_dir / module.__file__.rsplit("/", 1)[-1]
        assert shipped.read_bytes() == open(module.__file__, "rb").read()
    source = (converted_dir / "modeling_clipvg.py").read_text()
    assert "from clipvg_hf" not in source and "import clipvg_hf" not in source  # flat: sibling imports only
    assert "from .configuration_clipvg import" in source
