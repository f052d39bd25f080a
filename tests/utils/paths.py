"""Paths of the repository and the test fixtures, defined once for every test and helper."""

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_DIR.parent
BENCHMARKS_DIR = REPO_ROOT / "benchmarks"
FIXTURES_DIR = TESTS_DIR / "fixtures"
PARITY_DIR = FIXTURES_DIR / "parity"
TINY_DIR = PARITY_DIR / "tiny"
COCO_IMAGES = TINY_DIR / "image_data" / "other" / "images" / "mscoco" / "images" / "train2014"
HIVG_TINY_DIR = FIXTURES_DIR / "hivg_tiny"
TEMPLATES_DIR = FIXTURES_DIR / "templates"
