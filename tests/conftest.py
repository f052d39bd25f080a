"""Shared fixtures: the parity fixture produced by the official implementation, and tiny random configs."""

import json
import os
from pathlib import Path

import pytest

from utils.paths import PARITY_DIR

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach the Hub

FIXTURE_DIR = PARITY_DIR
TINY_DIR = FIXTURE_DIR / "tiny"
CHECKPOINT = TINY_DIR / "checkpoint.pth"
PARITY_SPLITS = ("unc/val", "unc/testA", "referit/test", "flickr/test")


@pytest.fixture(scope="session")
def expected_tensors() -> dict:
    """Tensors the official code produced on the fixture (inputs, features, boxes, IoUs, gradients)."""
    from safetensors.torch import load_file

    return load_file(TINY_DIR / "expected.safetensors")


@pytest.fixture(scope="session")
def expected_json() -> dict:
    """Per-split metadata, reliability subsets, loss values and tokenizer cases of the fixture."""
    return json.loads((TINY_DIR / "expected.json").read_text())


@pytest.fixture(scope="session")
def converted_dir(tmp_path_factory) -> Path:
    """The fixture checkpoint converted once per session with the package's converter and saved."""
    from clipvg_hf.commands.convert_checkpoint import main

    out = tmp_path_factory.mktemp("converted") / "clip-vg-tiny"
    assert main(["--checkpoint", str(CHECKPOINT), "--output_dir", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def converted_model(converted_dir):
    """The converted fixture model, loaded through ``AutoModel`` in eval mode."""
    from transformers import AutoModel

    import clipvg_hf  # noqa: F401  (registers the Auto classes)

    return AutoModel.from_pretrained(converted_dir).eval()


def make_tiny_config(**overrides):
    """[`clipvg_hf.testing_utils.tiny_clipvg_config`], imported late: the package must not load before the
    offline switch above is set."""
    from clipvg_hf.testing_utils import tiny_clipvg_config

    return tiny_clipvg_config(**overrides)


@pytest.fixture
def tiny_config():
    return make_tiny_config()


def make_tiny_hivg_config(**overrides):
    """The tiny HiVG config: four-layer towers at 64 px, bridges in blocks 0 and 2 reading text layers 2 and 4.
    ``overrides`` replace top-level fields. The package is imported late, as for [`make_tiny_config`]."""
    from clipvg_hf import HiVGConfig

    kwargs = dict(
        text_config=dict(
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=4,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=12,
        ),
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            patch_size=16,
            image_size=64,
            projection_dim=12,
        ),
        projection_dim=12,
        image_size=64,
        extract_layers=[0, 1, 3],
        bridge_layers=[0, 2],
        bridge_text_layers=[2, 4],
        fusion_hidden_size=12,
        fusion_num_layers=2,
        fusion_num_heads=2,
        fusion_intermediate_size=24,
        token_mlp_size=32,
        lora_rank=4,
        lora_alpha=2,
    )
    kwargs.update(overrides)
    return HiVGConfig(**kwargs)


@pytest.fixture
def tiny_hivg_config():
    return make_tiny_hivg_config()


@pytest.fixture
def restore_thread_settings(monkeypatch):
    """Undo the process-wide thread settings a benchmark's ``main`` makes for its training processes
    (``OMP_NUM_THREADS``, ``torch.set_num_threads``), so no later test's subprocess inherits another thread count
    and rounds differently from an in-process reference."""
    import torch

    threads = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # whatever the benchmark sets is undone at teardown
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def fixture_dataset(tmp_path_factory) -> Path:
    """The fixture's official split files converted to a dataset folder (configs ``<dataset>-unsup-single``)."""
    from clipvg_hf.data import convert_pack

    out = tmp_path_factory.mktemp("fixture-dataset")
    convert_pack(TINY_DIR / "splits", TINY_DIR / "image_data", out, "unsup-single")
    return out


#: Python source that makes ``clipvg_hf`` unimportable in a fresh process (the Hub remote-code route).
BLOCK_PACKAGE = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "clipvg_hf" or name.startswith("clipvg_hf."):
            raise ImportError("clipvg_hf is deliberately unavailable")
sys.meta_path.insert(0, _Block())
"""


def free_port() -> int:
    """A free TCP port on the loopback interface, for torchrun rendezvous."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int) -> list[str]:
    """``python -m torch.distributed.run`` for ``nproc`` local processes on the loopback (a free rendezvous port)."""
    import sys

    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
    ]
