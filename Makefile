# Prism: `make run` serves the demo on embedded defaults; `make test` runs the test suite.
# Needs only Python >= 3.11, make and git: everything else is installed here from the lock.

PYTHON ?= python3
UV_VERSION := 0.9.30
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: run test lint schema bench bench-bi clean install

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The runtime, and the embedded PostgreSQL (pgserver) where wheels exist (CPython <= 3.12).
install: $(UV)
	$(UV) sync --frozen --python $(PYTHON) --extra embedded

run: install
	$(VENV)/bin/prism serve --demo --with-worker

lint: install
	$(VENV)/bin/ruff check prism tests
	$(VENV)/bin/ruff format --check prism tests
	$(VENV)/bin/mypy

test: install lint
	$(VENV)/bin/pytest

# Ingestion benchmarks (about 6 minutes); results in bench/results/.
bench: install
	$(VENV)/bin/python bench/ingest.py all

# BI benchmarks at a million analyses (about 15 minutes); results in bench/results/bi.*.
bench-bi: install
	$(VENV)/bin/python bench/bi.py all --documents 100000

schema: install
	$(VENV)/bin/prism schema export --output schema.graphql

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
