"""The usage snippets of README.md, read from the README itself so the tests run exactly what users read.

A snippet is the fenced code block that follows a ``<!-- snippet: NAME -->`` marker; tests replace the
placeholder paths (``path/to/clipvg-model``, ``photo.jpg``) with the fixture's.
"""

import re

from utils.paths import REPO_ROOT

README = REPO_ROOT / "README.md"


def readme_snippet(name: str) -> str:
    """The code block after ``<!-- snippet: name -->`` in README.md."""
    pattern = re.compile(rf"<!-- snippet: {re.escape(name)} -->\s*```[a-z]*\n(.*?)```", re.S)
    match = pattern.search(README.read_text())
    if match is None:
        raise LookupError(f"README.md has no snippet named {name!r}")
    return match.group(1)


PROCESSOR_AND_MODEL = readme_snippet("processor-and-model")
VISUAL_GROUNDING_PIPELINE = readme_snippet("pipeline")
CLI = readme_snippet("cli")
