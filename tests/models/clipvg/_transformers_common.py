"""transformers' own common test mixins, from the sdist of the installed transformers, for the CLIP-VG testers.

The mixins live in the ``tests/`` folder of the transformers source distribution, not in the wheel. The sdist of the
installed version is downloaded once with pip into ``.cache/transformers-sdist/`` of this repository (ignored by git;
``CLIPVG_TRANSFORMERS_SDIST_CACHE`` overrides the place), its ``tests/*.py`` are unpacked there and imported as the
package ``transformers_common_tests``. Nothing of it is copied into the repository.

The sdist ships only the top-level common test modules. The few modules they import from the rest of transformers'
repository, and the Hub files they download, get small local stand-ins written next to the unpacked files:

* ``__init__.py``: empty, as in transformers' repository;
* ``exporters/test_export.py`` and ``generation/test_utils.py``: empty ``ExportTesterMixin`` and
  ``GenerationTesterMixin`` (the export tests are not in the sdist; CLIP-VG does not generate);
* ``utils/test_configuration_utils.py``: ``config_common_kwargs`` with non-default values of common config fields;
* ``fetch_hub_objects_for_ci.py``: ``url_to_local_path`` maps the mixins' Hub image URLs to synthetic local images.

When the sdist cannot be had (no network), :func:`require` skips the testers with the reason (under CI it
fails: there PyPI is reachable).
"""

import hashlib
import importlib
import os
import subprocess
import sys
import tarfile
import types
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import transformers

PACKAGE = "transformers_common_tests"
REPO_ROOT = Path(__file__).resolve().parents[3]

_STANDINS = {
    "__init__.py": "",  # empty, as in transformers' repository (the config mixin executes it)
    "exporters/__init__.py": "",
    "exporters/test_export.py": '''"""Stand-in: transformers' export tests are not part of its sdist."""


class ExportTesterMixin:
    pass
''',
    "generation/__init__.py": "",
    "generation/test_utils.py": '''"""Stand-in: only generative models mix in the generation tests."""


class GenerationTesterMixin:
    pass
''',
    "utils/__init__.py": "",
    "utils/test_configuration_utils.py": '''"""Stand-in: common config fields with non-default values."""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "dtype": "float16",
    "is_encoder_decoder": True,
    "add_cross_attention": True,
    "tie_word_embeddings": False,
    "chunk_size_feed_forward": 5,
    "id2label": {0: "label"},
    "label2id": {"label": 0},
    "problem_type": "regression",
}
''',
}

_FETCH_STANDIN = '''"""Stand-in: the Hub images the mixins download, as synthetic local images."""

import os

IMAGE_DIR = {image_dir!r}


def url_to_local_path(url, return_url_if_not_found=True):
    path = os.path.join(IMAGE_DIR, url.rsplit("/", 1)[-1])
    return path if os.path.exists(path) or not return_url_if_not_found else url
'''

#: the Hub images named by the image-processing and processing mixins
_IMAGE_NAMES = (
    "000000039769.jpg",
    "ADE_val_00000001.jpg",
    "ADE_val_00000002.jpg",
    "ADE_val_00000001.png",
    "ADE_val_00000002.png",
    "australia.jpg",
    "coco_sample.png",
    "pipeline-cat-chonk.jpeg",
    "view.jpg",
)


def cache_dir() -> Path:
    """Where the sdist is downloaded and unpacked."""
    default = REPO_ROOT / ".cache" / "transformers-sdist"
    return Path(os.environ.get("CLIPVG_TRANSFORMERS_SDIST_CACHE", default)) / transformers.__version__


def _download(target: Path) -> Path:
    """The sdist archive of the installed transformers, downloaded with pip once."""
    archives = sorted(target.glob("transformers-*.tar.gz"))
    if not archives:
        target.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--quiet",
            f"transformers=={transformers.__version__}",
            "-d",
            str(target),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        archives = sorted(target.glob("transformers-*.tar.gz"))
        if result.returncode or not archives:
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no archive"]
            raise RuntimeError(f"pip download of the transformers {transformers.__version__} sdist failed: {last[0]}")
    return archives[0]


def _unpack_tests(archive: Path, tests_dir: Path) -> None:
    """Only the top-level ``tests/*.py`` of the archive, each file checked to stay inside ``tests_dir``."""
    tests_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py") and member.isfile():
                (tests_dir / parts[2]).write_bytes(tar.extractfile(member).read())


def _synthetic_image(path: Path) -> None:
    """A reproducible 640x480 image (an RGB photo stand-in; PNG segmentation maps hold small label values)."""
    from PIL import Image

    seed = int(hashlib.sha256(path.name.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    if path.suffix == ".png":
        pixels = rng.integers(0, 150, size=(480, 640), dtype=np.uint8)
        Image.fromarray(pixels, mode="L").convert("RGB").save(path)
    else:
        y, x = np.mgrid[0:480, 0:640]
        base = np.stack([x * 255 // 640, y * 255 // 480, (x + y) * 255 // 1120], -1)
        noise = rng.integers(0, 40, size=base.shape)
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, quality=90)


def _write_standins(root: Path) -> None:
    for relative, text in _STANDINS.items():
        (root / "tests" / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / "tests" / relative).write_text(text)
    image_dir = root / "hub_images"
    image_dir.mkdir(exist_ok=True)
    for name in _IMAGE_NAMES:
        if not (image_dir / name).exists():
            _synthetic_image(image_dir / name)
    (root / "utils").mkdir(exist_ok=True)
    (root / "utils" / "fetch_hub_objects_for_ci.py").write_text(_FETCH_STANDIN.format(image_dir=str(image_dir)))


@cache
def load() -> str | None:
    """Make ``transformers_common_tests`` importable; the one-line reason why not, or None."""
    root = cache_dir()
    tests_dir = root / "tests"
    try:
        if not (tests_dir / "test_modeling_common.py").exists():
            _unpack_tests(_download(root), tests_dir)
        _write_standins(root)
    except (OSError, RuntimeError, subprocess.SubprocessError, tarfile.TarError) as error:
        return f"transformers' common tests are unavailable: {error}"
    # the image and processing mixins import `fetch_hub_objects_for_ci` from `<sdist>/utils` by path
    sys.path.insert(0, str(root / "utils"))
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(tests_dir)]
    sys.modules[PACKAGE] = package
    return None


def require() -> None:
    """Skip the calling test module with the reason when the common tests cannot be had; under CI, fail instead."""
    reason = load()
    if reason and os.environ.get("CI"):
        raise RuntimeError(reason)
    if reason:
        pytest.skip(reason, allow_module_level=True)


def common(module: str) -> types.ModuleType:
    """A module of transformers' ``tests/`` folder, e.g. ``common("test_modeling_common")``."""
    return importlib.import_module(f"{PACKAGE}.{module}")
