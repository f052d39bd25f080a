"""Loading converted HiVG folders as Hub remote code in a fresh process without the package (a merged one also
without peft).

(The package route, ``AutoModel.from_pretrained`` after ``import clipvg_hf``, is tested in test_convert_hivg.py.)"""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from clipvg_hf.commands.convert_checkpoint import main as convert_main

from _hivg_fixture import CHECKPOINTS, clip_config, converted, split_inputs
from conftest import BLOCK_PACKAGE

LOAD_AND_PREDICT = textwrap.dedent("""
    import json, sys, torch
    {prelude}
    from transformers import AutoModel, AutoModelForZeroShotObjectDetection
    class _NoPeft:
        def find_spec(self, name, path=None, target=None):
            if name == "peft" or name.startswith("peft."):
                raise ImportError("peft is deliberately unavailable")
    inputs = torch.load({inputs!r}, weights_only=True)
    results = {{}}
    for folder, auto in zip({folders!r}, (AutoModel, AutoModelForZeroShotObjectDetection)):
        model = auto.from_pretrained(folder, trust_remote_code=True).eval()
        with torch.no_grad():
            boxes = model(**inputs).pred_boxes
        code = sys.modules[type(model).__module__]
        results[folder] = dict(module=type(model).__module__, lora=model.config.lora_adapters, boxes=boxes.tolist(),
                               peft=code.inject_adapter_in_model is not None)
        # the merged folder loads next with peft unavailable: it needs no peft
        for name in [m for m in sys.modules if m == "peft" or m.startswith("peft.")]:
            del sys.modules[name]
        sys.meta_path.insert(0, _NoPeft())
    print(json.dumps(results))
""")


def _run(code, cwd):
    env = {
        "HF_HUB_OFFLINE": "1",
        "PATH": "/usr/bin:/bin",
        "HOME": str(cwd),
        "HF_HOME": str(cwd / "hf"),
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_hivg_folders_load_as_remote_code_with_and_without_lora_adapters(tmp_path):
    heads = tmp_path / "clip_config.json"
    heads.write_text(json.dumps(clip_config()))
    folders = [str(tmp_path / "hivg-adapters"), str(tmp_path / "hivg-merged")]
    for folder, extra in zip(folders, ([], ["--merge_lora"])):
        argv = ["--checkpoint", str(CHECKPOINTS["unc"]), "--output_dir", folder, "--clip_config", str(heads), *extra]
        assert convert_main(argv) == 0
    for name in ("modeling_hivg.py", "configuration_hivg.py", "modeling_clipvg.py", "configuration_clipvg.py"):
        assert (tmp_path / "hivg-merged" / name).is_file(), name
    inputs = {k: v[:3] for k, v in split_inputs("unc/testA").items()}
    torch.save(inputs, tmp_path / "inputs.pt")
    remote = _run(
        LOAD_AND_PREDICT.format(prelude=BLOCK_PACKAGE, inputs=str(tmp_path / "inputs.pt"), folders=folders), tmp_path
    )
    with torch.no_grad():
        reference = converted("unc")(**inputs).pred_boxes
    assert [remote[f]["lora"] for f in folders] == [True, False]
    assert [remote[f]["peft"] for f in folders] == [True, False]
    for folder in folders:
        assert remote[folder]["module"].startswith("transformers_modules.")
        torch.testing.assert_close(torch.tensor(remote[folder]["boxes"]), reference, atol=1e-6, rtol=0)
