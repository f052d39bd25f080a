"""The usage snippets of README.md and the docs pages, read from the pages themselves so the tests run exactly what
users read.

A snippet is the fenced code block that follows a ``<!-- snippet: NAME -->`` marker; names are unique over the README
and ``docs/``. Tests replace the placeholder paths (``path/to/clipvg-model``, ``photo.jpg``) with the fixture's.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from utils.paths import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS_DIR = REPO_ROOT / "docs"
#: generated copies of published cards (their snippets are the cards' own, tested by the Hub tests)
GENERATED_DOCS = DOCS_DIR / "examples"

FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!-- snippet: ([A-Za-z0-9_.-]+) -->\s*\Z")


@dataclass(frozen=True)
class Snippet:
    name: str | None  # None: a fenced block without a marker
    language: str
    code: str
    page: Path
    line: int

    @property
    def where(self) -> str:
        page = self.page.relative_to(REPO_ROOT) if REPO_ROOT in self.page.parents else self.page
        return f"{page}:{self.line}"


def doc_pages() -> list[Path]:
    """README.md and every hand-written page under docs/."""
    pages = sorted(p for p in DOCS_DIR.rglob("*.md") if GENERATED_DOCS not in p.parents)
    return [README, *pages]


def page_snippets(page: Path, text: str | None = None) -> list[Snippet]:
    """Every fenced block of a page, named by the marker right before it (if any)."""
    text = page.read_text() if text is None else text
    found = []
    for match in FENCE.finditer(text):
        marker = MARKER.search(text[: match.start()])
        line = text.count("\n", 0, match.start()) + 1
        found.append(Snippet(marker.group(1) if marker else None, match.group(1), match.group(2), page, line))
    return found


def all_snippets() -> list[Snippet]:
    return [snippet for page in doc_pages() for snippet in page_snippets(page)]


def named_snippets() -> dict[str, Snippet]:
    """Marked snippets by name; a name used twice is an error."""
    named: dict[str, Snippet] = {}
    for snippet in all_snippets():
        if snippet.name is None:
            continue
        if snippet.name in named:
            raise LookupError(
                f"snippet {snippet.name!r} is defined twice: {named[snippet.name].where}, {snippet.where}"
            )
        named[snippet.name] = snippet
    return named


def readme_snippet(name: str) -> str:
    """The code block after ``<!-- snippet: name -->`` in README.md or a docs page."""
    snippet = named_snippets().get(name)
    if snippet is None:
        raise LookupError(f"README.md and docs/ have no snippet named {name!r}")
    return snippet.code


PROCESSOR_AND_MODEL = readme_snippet("processor-and-model")
VISUAL_GROUNDING_PIPELINE = readme_snippet("pipeline")
CLI = readme_snippet("cli")
