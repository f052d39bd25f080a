"""Stage and upload a Gradio Space that demos a published CLIP-VG model.

The Space holds the demo (``clipvg_hf/app.py``), the ``"visual-grounding"`` pipeline code it runs on (a
``grounding_pipeline/`` package made of ``clipvg_hf/pipelines.py`` and the sibling modules it imports), the example
images with their licences, ``requirements.txt``, ``space_config.json`` (the model id) and a README whose metadata
says ``sdk: gradio``. The model itself comes from its repo with ``trust_remote_code=True``, so the Space does not
need this package. What a dry run writes is exactly what a push uploads.
"""

from __future__ import annotations

import ast
import json
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, SpaceCard, SpaceCardData
from huggingface_hub.errors import RepositoryNotFoundError

from .repo import HubPublishError, PushResult, resolve_token, validate_repo_id

__all__ = ["GRADIO_SDK_VERSION", "SPACE_REQUIREMENTS", "pipeline_modules", "push_space", "stage_space"]

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: Gradio version the demo is tested with, pinned in the Space's metadata.
GRADIO_SDK_VERSION = "6.31.0"
#: What the Space installs besides Gradio (the model's remote code needs transformers; ftfy cleans the text).
SPACE_REQUIREMENTS = ("torch", "transformers>=5.24,<6", "ftfy>=6.1", "numpy", "pillow")
PIPELINE_PACKAGE = "grounding_pipeline"


def _imports_package(node: ast.AST) -> bool:
    """Whether an import statement reaches clipvg_hf by name or a parent package (``from .. import``)."""
    if isinstance(node, ast.ImportFrom):
        return node.level > 1 or (node.level == 0 and (node.module or "").split(".")[0] == "clipvg_hf")
    return isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "clipvg_hf" for alias in node.names)


def pipeline_modules(start: str = "pipelines.py") -> list[str]:
    """``start`` and every sibling module of ``clipvg_hf`` it imports relatively (recursively), in import order.

    Absolute imports of ``clipvg_hf`` or imports from a parent package cannot work in the Space and are refused.
    """
    order: list[str] = []
    pending = [start]
    while pending:
        name = pending.pop(0)
        if name in order:
            continue
        path = _PACKAGE_DIR / name
        if not path.is_file():
            raise HubPublishError(f"the pipeline imports {name[:-3]!r}, which is not a module file of clipvg_hf")
        order.append(name)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                pending.extend(
                    [node.module.split(".")[0] + ".py"]
                    if node.module
                    else [alias.name + ".py" for alias in node.names]
                )
            elif _imports_package(node):
                raise HubPublishError(
                    f"clipvg_hf/{name} line {node.lineno} imports outside its own folder; "
                    "the Space could not run it without the package"
                )
    return order


def _space_card(model_id: str, repo_id: str) -> SpaceCard:
    """README of the Space: Gradio metadata pointing at the model, and what the demo does."""
    name = repo_id.split("/")[1]
    data = SpaceCardData(
        title=name[:30],
        sdk="gradio",
        sdk_version=GRADIO_SDK_VERSION,
        app_file="app.py",
        models=[model_id],
        license="mit",
        emoji="🎯",
        colorFrom="blue",
        colorTo="green",
        pinned=False,
        short_description="CLIP-VG: one box per referring expression",
    )
    body = f"""# {name}

A demo of [{model_id}](https://huggingface.co/{model_id}), a CLIP-VG visual grounding model: upload an image,
write one referring expression per line ("the man on the left") and the model draws one box per expression, listed
in image pixels; the letterboxed image the model sees is shown on request. CLIP-VG always answers with exactly one
box and has no confidence score.

The model and its processor load from the model repo with `trust_remote_code=True`; the pipeline that batches the
expressions of an image (the image is encoded once for all of them) is in `grounding_pipeline/`. The example images
keep their own licences: `examples/LICENSES.md`.

Run it locally: `pip install gradio -r requirements.txt && python app.py` (serves on 127.0.0.1:7860; the model id
is read from `space_config.json`).
"""
    return SpaceCard.from_template(data, template_str="---\n{{ card_data }}\n---\n" + body)


def stage_space(model_id: str, repo_id: str, out: str | Path) -> list[str]:
    """Write the Space's files into ``out``; returns their paths relative to it, sorted."""
    validate_repo_id(model_id)
    validate_repo_id(repo_id)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HubPublishError(f"{out} exists and is not an empty folder; choose a new folder for the staged Space")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_PACKAGE_DIR / "app.py", out / "app.py")
    package = out / PIPELINE_PACKAGE
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text('"""The visual-grounding pipeline of clipvg-hf, copied for this Space."""\n')
    for name in pipeline_modules():
        shutil.copyfile(_PACKAGE_DIR / name, package / name)
    shutil.copytree(
        _PACKAGE_DIR / "examples", out / "examples", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
    )
    (out / "requirements.txt").write_text("".join(f"{line}\n" for line in SPACE_REQUIREMENTS))
    (out / "space_config.json").write_text(json.dumps({"model_id": model_id}, indent=2) + "\n")
    _space_card(model_id, repo_id).save(out / "README.md")
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def push_space(
    model_id: str,
    repo_id: str,
    *,
    private: bool = False,
    dry_run_dir: str | Path | None = None,
    token: str | None = None,
) -> PushResult:
    """Stage the Space for ``model_id`` and upload it to the Space repo ``repo_id`` (created with sdk gradio).

    A real push first checks that the model repo exists. With ``dry_run_dir`` the staged folder is written there and
    nothing is uploaded (no token needed).
    """
    validate_repo_id(model_id)
    validate_repo_id(repo_id)
    notes = [f"the Space loads {model_id} with trust_remote_code=True"]
    if dry_run_dir:
        files = stage_space(model_id, repo_id, dry_run_dir)
        return PushResult(repo_id, "space", files, notes, folder=Path(dry_run_dir))
    token = resolve_token(token)
    api = HfApi(token=token)
    try:
        api.model_info(model_id)
    except RepositoryNotFoundError:
        raise HubPublishError(
            f"model {model_id} is not on the Hub (or not visible with this token): "
            "push it first with `clipvg-push model`"
        ) from None
    with tempfile.TemporaryDirectory(prefix="clipvg-space-") as scratch:
        folder = Path(scratch) / "upload"
        files = stage_space(model_id, repo_id, folder)
        url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=folder, commit_message=f"Demo of {model_id}")
    return PushResult(repo_id, "space", files, notes, url=str(url))
