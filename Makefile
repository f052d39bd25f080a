# `make test` and `make demo` create .venv on first use; torch's CPU wheel is pinned first so that
# the loose `torch` requirement of the package never pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0

.PHONY: venv test test-fast style quality demo clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e ".[test,quality]"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q tests

# the quick loop: everything but the tests that start subprocesses, torchrun or a browser
test-fast: venv
	$(PY) -m pytest -q -m "not slow" tests

# what the style check wants, applied in place (lint fixes, then the formatter; ruff config in pyproject.toml)
style: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# the style check alone (CI runs it before the tests)
quality: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: venv
	$(PY) -m clipvg_hf.demo --output_dir outputs/demo

clean:
	rm -rf $(VENV) outputs build *.egg-info
