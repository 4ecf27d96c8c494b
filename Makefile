# Prism: `make run` serves the demo on embedded defaults; `make test` runs the test suite.
# Needs only Python >= 3.11, make, git and npm (Debian's is installed when missing, as root):
# everything else is installed here from the locks (uv.lock, web/package-lock.json).

PYTHON ?= python3
UV_VERSION := 0.9.30
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: run test lint schema docs bench bench-bi bench-perf bench-search bench-events bench-webhooks opensearch-stop kafka-stop clean install

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The runtime, and the embedded PostgreSQL (pgserver) where wheels exist (CPython <= 3.12);
# the browser files Prism serves (GraphiQL, Chart.js for the dashboard), pinned by web/package-lock.json (npm ci);
# Tesseract for OCR (Debian's tesseract-ocr with German and French, installed as root when
# missing; elsewhere it says what to install).
install: $(UV)
	$(UV) sync --frozen --python $(PYTHON) --extra embedded
	scripts/web-assets.sh install $(VENV)/bin/python
	scripts/tesseract.sh ensure

run: install
	$(VENV)/bin/prism serve --demo --with-worker

lint: install
	$(VENV)/bin/ruff check prism tests bench
	$(VENV)/bin/ruff format --check prism tests bench
	$(VENV)/bin/mypy

# The services the tests need: Redis and Chromium (headless, for the browser tests) are
# installed here from Debian when missing (the tests start their own Redis instances and
# browsers); an OpenSearch node and a Kafka broker are started here (once; running ones are
# reused) and handed to pytest as PRISM_TEST_OPENSEARCH_URL and PRISM_TEST_KAFKA_BOOTSTRAP.
# Under CI=true a service that cannot start fails the run; elsewhere its tests are skipped,
# saying why.
test: install lint
	scripts/redis.sh ensure
	scripts/chromium.sh ensure
	@url="$$(scripts/opensearch.sh start)" || { \
	  if [ "$$CI" = true ]; then echo "make test: OpenSearch did not start" >&2; exit 1; fi; \
	  echo "make test: no OpenSearch node; its tests will be skipped" >&2; url=; }; \
	kafka="$$(scripts/kafka.sh ensure)" || { \
	  if [ "$$CI" = true ]; then echo "make test: Kafka did not start" >&2; exit 1; fi; \
	  echo "make test: no Kafka broker; its tests will be skipped" >&2; kafka=; }; \
	PRISM_TEST_OPENSEARCH_URL="$$url" PRISM_TEST_KAFKA_BOOTSTRAP="$$kafka" $(VENV)/bin/pytest

opensearch-stop:
	scripts/opensearch.sh stop

kafka-stop:
	scripts/kafka.sh stop

# Benchmarks (about 23 minutes): the ingestion pipeline (about 6 minutes), then Prism beside
# PostGraphile and the physical limit (bench-perf); results in bench/results/.
bench: install
	$(VENV)/bin/python bench/ingest.py all
	$(VENV)/bin/python -m bench.perf --make

# Prism (interpreted, and compiled for registered operations), PostGraphile 4.14 and 5 (npm,
# cached in ~/.cache/prism/bench-node; 5 from bench/perf/postgraphile5's lock) and the physical
# limit (raw Starlette+asyncpg, the fastest single statement per query) on the same data,
# driven by wrk (about 17 minutes). Needs Node.js with npm, and wrk (installed from Debian when missing
# and run as root). More options in PERF_ARGS, e.g. PERF_ARGS="--profile 30" (needs py-spy on
# PATH: `install` removes it from the virtualenv; see bench/perf/profile.py).
bench-perf: install
	$(VENV)/bin/python -m bench.perf --make $(PERF_ARGS)

# Search benchmarks at 100k sections, PostgreSQL and OpenSearch; results in bench/results/.
# More options in SEARCH_ARGS, e.g. SEARCH_ARGS="--sections 2000 --results-dir /tmp/search".
bench-search: install
	PRISM_BENCH_OPENSEARCH_URL="$$(scripts/opensearch.sh start)" $(VENV)/bin/python bench/search.py $(SEARCH_ARGS)

# The outbox and its Kafka relay (about 2 minutes): relay throughput, what the outbox adds to a
# mutation, commit → Kafka latency; results in bench/results/events.*. More options in
# EVENTS_ARGS, e.g. EVENTS_ARGS="--events 10000 --results-dir /tmp/events".
bench-events: install
	PRISM_BENCH_KAFKA_BOOTSTRAP="$$(scripts/kafka.sh ensure)" $(VENV)/bin/python bench/outbox.py $(EVENTS_ARGS)

# Webhooks: change → delivered at a loopback endpoint, signed (about 15 seconds); more options
# in WEBHOOKS_ARGS, e.g. WEBHOOKS_ARGS="--changes 300 --endpoints 3".
bench-webhooks: install
	$(VENV)/bin/python bench/webhooks.py $(WEBHOOKS_ARGS)

# BI benchmarks at a million analyses (about 15 minutes); results in bench/results/bi.*.
# More options in BI_ARGS (later ones win), e.g. BI_ARGS="--documents 1000 --results-dir /tmp/bi".
# tests/test_bench_smoke.py runs every benchmark at a tiny size, into a temporary directory.
bench-bi: install
	$(VENV)/bin/python bench/bi.py all --documents 100000 $(BI_ARGS)

schema: install
	$(VENV)/bin/prism schema export --output schema.graphql

# Generated documents: the configuration reference (from prism/config.py) and the access
# policy table (from prism/authz/policy.py); tests fail when the committed ones are stale.
docs: install
	$(VENV)/bin/prism config docs --output docs/configuration.md
	$(VENV)/bin/prism policy table --output docs/policy.md

# Response cache and limits (about 8 minutes; not part of `make bench`): real `prism serve`
# processes with Redis, in-process and no cache, warm and cold; results in bench/results/.
.PHONY: bench-cache
bench-cache: install
	scripts/redis.sh ensure
	$(VENV)/bin/python bench/cache.py all

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
