# Threadline: `make up` starts everything with demo data; `make test` runs the tests.
# Both install what they need first (a Python venv from pyproject.toml, Kafka jars from Maven Central,
# the portal's GOV.UK Frontend and axe-core from the npm registry, Debian's Chromium for its tests).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
KAFKA_LIBS := var/kafka/libs
PORTAL     := services/portal
CHROMIUM   ?= /usr/bin/chromium

.DEFAULT_GOAL := help
.PHONY: help install assets browser up down status seed-demo test test-all security lint typecheck bench bench-scaling chaos docs clean reset

help:
	@echo "make up         start PostgreSQL, Kafka and every service, seed a demo, print the URLs"
	@echo "make down       stop everything 'make up' started"
	@echo "make status     what is running"
	@echo "make test       the test suite (starts its own PostgreSQL and Kafka)"
	@echo "make test-all   the test suite including slow suites (marked slow or security)"
	@echo "make security   the attack suites (tests/security), results in bench/results/security.json"
	@echo "make lint       ruff and mypy"
	@echo "make bench      benchmarks, results in bench/results/, report in bench/results/report.html"
	@echo "make bench-scaling  partitions/consumers 1-2-4 and link-file 100k-1M-5M (long), into the report"
	@echo "make chaos      faults under load (kill -9, broker and database restarts, pauses), then"
	@echo "                check nothing was lost or done twice: bench/results/chaos.json"
	@echo "make docs       regenerate docs/events.md from the event registry"
	@echo "make reset      stop everything and delete local data (var/)"

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(KAFKA_LIBS)/.fetched: deploy/local/pom.xml
	mkdir -p $(KAFKA_LIBS)
	rm -f $(KAFKA_LIBS)/*.jar
	mvn -q -B -f deploy/local/pom.xml dependency:copy-dependencies \
	    -DoutputDirectory=$(CURDIR)/$(KAFKA_LIBS) -DincludeScope=runtime
	touch $@

# GOV.UK Frontend (served by the portal) and axe-core (its browser tests), pinned by package-lock.json.
$(PORTAL)/node_modules/.installed: $(PORTAL)/package.json $(PORTAL)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm is needed for the portal's assets (apt-get install npm)"; exit 1; }
	cd $(PORTAL) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

assets: $(PORTAL)/node_modules/.installed

# The browser tests drive Debian's Chromium (Playwright downloads no browser of its own).
# Installed only when missing.
browser:
	@test -x $(CHROMIUM) || { \
	    echo "installing Debian's chromium for the portal's browser tests"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }

install: $(BIN)/.installed $(KAFKA_LIBS)/.fetched assets browser

up: install
	$(BIN)/threadline up

down:
	@if [ -x $(BIN)/threadline ]; then $(BIN)/threadline down; else echo "nothing to stop"; fi

status: install
	$(BIN)/threadline status

seed-demo: install
	$(BIN)/threadline seed-demo

test: install
	$(BIN)/python -m pytest -m "not slow and not security"

test-all: install
	$(BIN)/python -m pytest

# The attack suites: the authorisation matrix, token, body, rate, webhook, CSRF and dump negatives
# (also in `make test`), and schemathesis against every service as a real process (marked
# security). Writes bench/results/security.json and prints its table; see docs/security.md.
security: install
	$(BIN)/python -m pytest tests/security -m "" -p no:cacheprovider

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services deploy

bench: install
	@# bench/ingest.py drives load with wrk (C, from Debian) and profiles with py-spy (PyPI).
	@command -v wrk >/dev/null 2>&1 || { \
	    echo "installing wrk, the HTTP load generator of bench/ingest.py"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get install -y -qq wrk || { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk; }; }
	@test -x $(BIN)/py-spy || $(BIN)/pip install --quiet py-spy || \
	    echo "py-spy did not install: bench/ingest.py will skip its profile"
	@# bench/linking.py compares with Splink on DuckDB: the optional `bench` dependencies.
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@# Two cores, shared: one benchmark at a time on this machine, whoever runs it.
	flock /tmp/threadline-bench.lock $(BIN)/python -m bench
	$(BIN)/python -m bench.report

bench-scaling: install
	@# link-file at 100k, 1M and 5M records (5M: well over an hour on this machine), then N partitions and
	@# N consumers for N = 1, 2, 4; each point lands in bench/results/scaling.json as it is measured.
	flock /tmp/threadline-bench.lock $(BIN)/python -m bench.scaling linking
	flock /tmp/threadline-bench.lock $(BIN)/python -m bench.scaling pipeline
	$(BIN)/python -m bench.report

# Faults under a mixed load, ~12 min (docs/chaos.md); exit 1 if anything was lost or done twice.
chaos: install
	flock /tmp/threadline-bench.lock $(BIN)/python -m bench.chaos

docs: install
	$(BIN)/threadline events-doc --write docs/events.md

reset: down
	rm -rf var/dev var/log var/run
