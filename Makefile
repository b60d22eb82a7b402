# Set-up and everyday commands. `make run` and `make test` each do all the set-up they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# System packages the integration tests run for real (command:package).
TEST_SERVICES := mosquitto:mosquitto openssl:openssl influxd:influxdb

.PHONY: run test lint unit bench bench-store clean help

help:
	@echo "make run    set up and run the embedded stack with its simulator (API on 127.0.0.1:8000)"
	@echo "make test   set up (virtualenv, packages, real services) and run lint and every test"
	@echo "make bench  end-to-end throughput and latency (embedded, then Kafka), per-rule throughput; figures go in BENCHMARKS.md"
	@echo "make bench-store  store write rates and dashboard query latencies, embedded and InfluxDB"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "citywatch needs Python 3.11 or newer"' \
	  || { echo "citywatch: install Python 3.11+ (apt-get install -y python3)"; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "citywatch: the venv module is missing"; \
	  deploy/scripts/ensure-packages.sh python3-venv && $(PYTHON) -m venv $(VENV); }

$(VENV)/.installed-run: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@ $(VENV)/.installed-run

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

test: $(VENV)/.installed-dev services lint
	$(BIN)/pytest -q

bench: $(VENV)/.installed-dev services
	$(BIN)/python -m bench.e2e
	$(BIN)/python -m bench.rules
	$(BIN)/python -m bench.rules_throughput
	$(BIN)/python -m bench.kafka
	$(BIN)/python -m bench.kafka --workload filling --skip-latency

# Store mode: write rates per backend and dashboard query latencies (STORE_BENCH_ARGS, e.g. --rows 10000000).
bench-store: $(VENV)/.installed-dev services
	$(BIN)/python -m bench.store $(STORE_BENCH_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
