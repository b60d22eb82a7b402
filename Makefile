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

.PHONY: run test lint unit bench bench-services bench-peers bench-soak bench-store bench-console screenshots lock clean help

help:
	@echo "make run    set up and run the embedded stack with its simulator (API on 127.0.0.1:8000)"
	@echo "make test   set up (virtualenv, packages, real services) and run lint and every test"
	@echo "make bench  every figure of BENCHMARKS.md at its defaults: end to end (embedded, Kafka), alerts, memory, InfluxDB, rules, dispatch, and side by side with Node-RED and a raw Kafka consumer"
	@echo "make bench-peers  citywatch side by side with Node-RED, a paho subscriber and a raw Kafka consumer (installs Node-RED)"
	@echo "make bench-soak   one hour at 3,000 events/s: memory and latency over time"
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

# What the benchmarks run beyond the test services: the C MQTT publisher of the side-by-side run, and
# Node-RED (from npm, into NODE_RED_DIR) to run beside.
BENCH_SERVICES := mosquitto_pub:mosquitto-clients node:nodejs npm:npm
NODE_RED_DIR ?= .node-red
NODE_RED_VERSION := 4.1.15

bench: $(VENV)/.installed-dev services bench-services
	$(BIN)/python -m bench.e2e
	$(BIN)/python -m bench.alerts --type bin_overflow
	$(BIN)/python -m bench.soak --minutes 5 --sample-s 30
	$(BIN)/python -m bench.feed_window
	$(BIN)/python -m bench.store --backends influxdb --rows 200000 --repeats 10
	$(BIN)/python -m bench.rules
	$(BIN)/python -m bench.rules_throughput
	$(BIN)/python -m bench.kafka
	$(BIN)/python -m bench.kafka --workload filling --skip-latency
	$(BIN)/python -m bench.dispatch --solvers nearest,pyvrp
	NODE_RED_DIR=$(NODE_RED_DIR) $(BIN)/python -m bench.peers

bench-services: services
	@deploy/scripts/ensure-packages.sh $(BENCH_SERVICES)
	@test -x $(NODE_RED_DIR)/node_modules/.bin/node-red || { mkdir -p $(NODE_RED_DIR) \
	  && cd $(NODE_RED_DIR) && npm install --no-audit --no-fund -q node-red@$(NODE_RED_VERSION); }

bench-peers: $(VENV)/.installed-dev bench-services
	NODE_RED_DIR=$(NODE_RED_DIR) $(BIN)/python -m bench.peers

# The issue-13 soak: an hour at half the sustained rate (`make bench` runs five minutes of it).
bench-soak: $(VENV)/.installed-dev services
	$(BIN)/python -m bench.soak --minutes 60 --sample-s 60

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
