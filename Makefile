# Set-up and everyday commands. `make run` and `make test` each do all the set-up they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Locked versions (with hashes) of every runtime and dev dependency: `make lock` writes them from
# pyproject.toml's ranges, and every install here, in CI and in the Docker image comes from them.
RUN_LOCK := requirements/run.txt
DEV_LOCK := requirements/dev.txt
# The resolver `make lock` runs (only there: installs use pip with the lock files).
UV_VERSION := 0.13.9
# System packages the integration tests run for real (command:package).
TEST_SERVICES := mosquitto:mosquitto openssl:openssl influxd:influxdb kubectl:kubectl postgresql chromium:chromium

.PHONY: run test lint unit bench bench-store bench-console screenshots lock clean help

help:
	@echo "make run    set up and run the embedded stack with its simulator (API on 127.0.0.1:8000)"
	@echo "make test   set up (virtualenv, packages, real services) and run lint and every test"
	@echo "make bench  end-to-end throughput and latency (embedded, then Kafka), per-rule throughput, dispatch plans; figures go in BENCHMARKS.md"
	@echo "make bench-store  store write rates and dashboard query latencies, embedded and InfluxDB"
	@echo "make screenshots  the console's views against the demo, written to docs/console/*.png"
	@echo "make bench-console  the console's map with 10,000 devices in headless Chromium (BENCHMARKS.md)"
	@echo "make lock   re-resolve requirements/*.txt from pyproject.toml (UPGRADE=1: newest allowed versions)"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "citywatch needs Python 3.11 or newer"' \
	  || { echo "citywatch: install Python 3.11+ (apt-get install -y python3)"; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "citywatch: the venv module is missing"; \
	  deploy/scripts/ensure-packages.sh python3-venv && $(PYTHON) -m venv $(VENV); }

# The locked packages first (hash-checked), then citywatch itself without letting pip resolve anything.
$(VENV)/.installed-run: $(BIN)/python $(RUN_LOCK) pyproject.toml
	$(BIN)/pip install -q --require-hashes -r $(RUN_LOCK)
	$(BIN)/pip install -q --no-deps -e .
	@touch $@

$(VENV)/.installed-dev: $(BIN)/python $(DEV_LOCK) pyproject.toml
	$(BIN)/pip install -q --require-hashes -r $(DEV_LOCK)
	$(BIN)/pip install -q --no-deps -e .
	@touch $@ $(VENV)/.installed-run

# Keeps the pins already in the lock files unless UPGRADE=1; the run lock is resolved inside the dev lock,
# so both install the same version of every package they share.
lock: $(BIN)/python
	$(BIN)/pip install -q uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml --extra dev $(LOCK_FLAGS) -o $(DEV_LOCK)
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) -c $(DEV_LOCK) -o $(RUN_LOCK)

LOCK_FLAGS = --universal --python-version 3.11 --generate-hashes --quiet --custom-compile-command "make lock" \
	$(if $(UPGRADE),--upgrade)

run: $(VENV)/.installed-run
	@deploy/scripts/ensure-packages.sh mosquitto:mosquitto \
	  || echo "citywatch: continuing with the embedded pure-Python broker (amqtt, ~1-2k events/s)"
	$(BIN)/citywatch up --simulate

services:
	@deploy/scripts/ensure-packages.sh $(TEST_SERVICES)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: $(VENV)/.installed-dev
	$(BIN)/pytest tests/unit tests/property -q

# Two test processes, each with its own services; a test file stays on one of them (its module fixtures).
test: $(VENV)/.installed-dev services lint
	$(BIN)/pytest -q -n 2 --dist loadfile

bench: $(VENV)/.installed-dev services
	$(BIN)/python -m bench.e2e
	$(BIN)/python -m bench.rules
	$(BIN)/python -m bench.rules_throughput
	$(BIN)/python -m bench.kafka
	$(BIN)/python -m bench.kafka --workload filling --skip-latency
	$(BIN)/python -m bench.dispatch --solvers nearest,pyvrp

# Store mode: write rates per backend and dashboard query latencies (STORE_BENCH_ARGS, e.g. --rows 10000000).
bench-store: $(VENV)/.installed-dev services
	$(BIN)/python -m bench.store $(STORE_BENCH_ARGS)

# The console's views in headless Chromium against `citywatch up --simulate` (README.md, docs/console.md).
screenshots: $(VENV)/.installed-dev services
	CONSOLE_SCREENSHOTS=docs/console $(BIN)/pytest tests/browser/test_screenshots.py -q

bench-console: $(VENV)/.installed-dev services
	$(BIN)/python -m bench.console

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
