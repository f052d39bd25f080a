"""README.md and the docs pages: every python snippet is named and runs, every internal link and anchor resolves, and
the site builds with ``mkdocs build --strict``."""

import ast
import importlib
import json
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from utils.paths import COCO_IMAGES, HIVG_TINY_DIR, REPO_ROOT
from utils.readme_snippets import DOCS_DIR, README, Snippet, all_snippets, doc_pages, named_snippets, page_snippets

PHOTO = next(iter(sorted(COCO_IMAGES.glob("*.jpg"))))


# ----------------------------------------------------------------------------------------------- snippets


def unnamed_python(snippets: list[Snippet]) -> list[str]:
    """Python blocks without a ``<!-- snippet: NAME -->`` marker: nothing would run them."""
    return [s.where for s in snippets if s.language == "python" and s.name is None]


def test_every_python_block_is_a_named_snippet():
    assert unnamed_python(all_snippets()) == []
    named_snippets()  # raises on a name used twice


def test_an_unmarked_python_block_is_reported(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- snippet: ok -->\n```python\nx = 1\n```\n\ntext\n\n```python\ny = 2\n```\n")
    snippets = page_snippets(page)
    assert [s.name for s in snippets] == ["ok", None]
    assert len(unnamed_python(snippets)) == 1


def _run(code: str, namespace: dict | None = None) -> dict:
    namespace = {} if namespace is None else namespace
    exec(compile(code, "<snippet>", "exec"), namespace)
    return namespace


def run_processor_and_model(code, request, capsys):
    model_dir = request.getfixturevalue("converted_dir")
    _run(code.replace("path/to/clipvg-model", str(model_dir)).replace("photo.jpg", str(PHOTO)))
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and printed[0].startswith("woman holding a pink umbrella [")
    box = ast.literal_eval(printed[1].removeprefix("the umbrella "))
    assert len(box) == 4 and box[0] <= box[2] and box[1] <= box[3]


def run_pipeline(code, request, capsys):
    model_dir = request.getfixturevalue("converted_dir")
    _run(code.replace("path/to/clipvg-model", str(model_dir)).replace("photo.jpg", str(PHOTO)))
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(" {")[0] for line in printed] == ["woman holding a pink umbrella", "the umbrella"]
    assert all("'xmin'" in line and "'ymax'" in line for line in printed)


def run_hivg_pipeline(code, request, capsys):
    tmp_path = request.getfixturevalue("tmp_path")
    sys.path.insert(0, str(REPO_ROOT / "tests" / "models" / "hivg"))
    try:
        clip_config = importlib.import_module("_hivg_fixture").clip_config()
    finally:
        sys.path.remove(str(REPO_ROOT / "tests" / "models" / "hivg"))
    heads = tmp_path / "clip_config.json"
    heads.write_text(json.dumps(clip_config))
    folder = tmp_path / "hivg-b-refcoco"
    convert = importlib.import_module("clipvg_hf.convert_checkpoint").main
    checkpoint = HIVG_TINY_DIR / "checkpoint.pth"
    assert (
        convert(
            ["--checkpoint", str(checkpoint), "--output_dir", str(folder), "--merge_lora"]
            + ["--clip_config", str(heads)]
        )
        == 0
    )
    namespace = _run(code.replace('"hivg-b-refcoco"', repr(str(folder))).replace("photo.jpg", str(PHOTO)))
    (result,) = namespace["grounder"](str(PHOTO), text=["the woman holding a pink umbrella"])
    assert result["label"] == "the woman holding a pink umbrella" and set(result["box"]) == {
        "xmin",
        "ymin",
        "xmax",
        "ymax",
    }


def run_grounding_dataset(code, request, capsys):
    dataset = request.getfixturevalue("fixture_dataset")
    # the fixture's pack is single-source; its train_pseudo split is smaller than one official batch
    code = code.replace('"/data/clipvg-hf"', repr(str(dataset))).replace("refcoco-unsup-multi", "refcoco-unsup-single")
    namespace = _run(code.replace("batch_size=64", "batch_size=4"))
    batch = next(iter(namespace["loader"]))
    assert batch["pixel_values"].shape[0] == 4 and batch["labels"].shape == (4, 4)


def run_register_layout(code, request, capsys):
    from clipvg_hf.data import hub_layouts

    before = dict(hub_layouts.LAYOUTS)
    try:
        _run(code)
        assert hub_layouts.LAYOUTS["me/refs"].name == "me/refs"
    finally:
        hub_layouts.LAYOUTS.clear()
        hub_layouts.LAYOUTS.update(before)


def run_metric(code, request, capsys):
    import datasets
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from clipvg_hf.data import CLIPVGCollator, CLIPVGEvalTransform, GroundingDataset
    from clipvg_hf.loading import load_model_and_processor

    model, processor = load_model_and_processor(request.getfixturevalue("converted_dir"))
    split = datasets.load_dataset(str(request.getfixturevalue("fixture_dataset")), "refcoco-unsup-single", split="val")
    accelerator = Accelerator(cpu=True)
    view = GroundingDataset(split, CLIPVGEvalTransform(processor.image_processor))
    loader = accelerator.prepare_data_loader(
        DataLoader(view, batch_size=5, collate_fn=CLIPVGCollator(processor.tokenizer))
    )
    _run(code, {"loader": loader, "model": model, "accelerator": accelerator})
    printed = ast.literal_eval(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["num_samples"] == len(view) and 0.0 <= printed["accuracy"] <= 1.0
    assert {"accuracy@0.25", "accuracy@0.75", "mean_iou"} <= set(printed)


#: how each named python snippet is run: placeholders swapped for fixtures, then what it printed checked
RUNNERS = {
    "processor-and-model": run_processor_and_model,
    "pipeline": run_pipeline,
    "hivg-pipeline": run_hivg_pipeline,
    "grounding-dataset": run_grounding_dataset,
    "register-layout": run_register_layout,
    "metric": run_metric,
}

PYTHON_SNIPPETS = sorted(name for name, s in named_snippets().items() if s.language == "python")


@pytest.mark.parametrize("name", PYTHON_SNIPPETS)
def test_python_snippet_runs(name, request, capsys):
    snippet = named_snippets()[name]
    runner = RUNNERS.get(name)
    assert runner is not None, f"{snippet.where}: snippet {name!r} has no runner in tests/docs/test_docs.py"
    runner(snippet.code, request, capsys)


def test_every_runner_has_its_snippet():
    assert sorted(RUNNERS) == PYTHON_SNIPPETS


# ----------------------------------------------------------------------------------------------- links

FENCED = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    return INLINE_CODE.sub("", FENCED.sub("", text))


def anchors(text: str) -> set[str]:
    """Heading anchors as mkdocs (python-markdown's toc) and GitHub make them."""
    found = set()
    for heading in HEADING.findall(FENCED.sub("", text)):
        heading = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading)
        ascii_ = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
        found.add(re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", ascii_).strip().lower()))  # toc's slugify
        found.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))  # GitHub's
    return found


def broken_links(page: Path, text: str | None = None, docs_dir: Path = DOCS_DIR) -> list[str]:
    """Internal links of a page whose file or anchor does not exist. A docs page may link only to docs pages (the
    site holds nothing else); README.md to any file of the repository."""
    text = page.read_text() if text is None else text
    problems = []
    for target in LINK.findall(_prose(text)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            problems.append(f"{page.name}: {target}: no such file")
            continue
        if page != README and path and (docs_dir not in resolved.parents or resolved.suffix != ".md"):
            problems.append(f"{page.name}: {target}: not a docs page")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text()):
            problems.append(f"{page.name}: {target}: no heading with that anchor")
    return problems


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_internal_links_resolve(page):
    assert broken_links(page) == []


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in LINK.findall(_prose(README.read_text()))}
    pages = {p.resolve() for p in doc_pages() if p != README and p.name != "index.md"}
    assert sorted(str(p.relative_to(REPO_ROOT)) for p in pages - linked) == []


def test_broken_links_are_reported(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "other.md").write_text("# Other\n\n## A section\n")
    page = docs / "page.md"
    text = (
        "[ok](other.md#a-section) [self](#title) [web](https://example.org/x)\n"
        "[gone](missing.md) [anchor](other.md#no-such-section) `[code](missing.md)`\n\n# Title\n"
        "```bash\n# [fenced](missing.md)\n```\n"
    )
    page.write_text(text)
    assert broken_links(page, docs_dir=docs) == [
        "page.md: missing.md: no such file",
        "page.md: other.md#no-such-section: no heading with that anchor",
    ]


# ----------------------------------------------------------------------------------------------- the site


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir"]
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run([*command, str(site)], capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_site_builds_strict(tmp_path):
    result = mkdocs_build(REPO_ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    for page in ("index.html", "models/hivg/index.html", "safety/index.html", "examples/model_card/index.html"):
        assert (tmp_path / "site" / page).is_file()


@pytest.mark.slow
def test_strict_build_fails_on_a_broken_link(tmp_path):
    """The project's mkdocs settings, on a page with a dead anchor: the build must fail."""
    import yaml

    settings = yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Home\n\n[there](index.md#nowhere)\n")
    settings.update(docs_dir=str(tmp_path / "docs"), nav=["index.md"])
    settings.pop("exclude_docs", None)
    config = tmp_path / "mkdocs.yml"
    config.write_text(yaml.safe_dump(settings))
    result = mkdocs_build(config, tmp_path / "site")
    assert result.returncode != 0 and "nowhere" in result.stderr
