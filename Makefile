# Everyday commands. `make` alone lists them. CI runs `make test` (see .ci/run).
#
#   make run     the demo on http://127.0.0.1:8000 (HOST=... PORT=... to change)
#   make test    ruff, mypy, the browser client's checks, the unit tests (no service), then the
#                integration and end-to-end tests on SQLite and on PostgreSQL, in parallel
#                (PYTEST_ARGS="-k resume -x" passes options to pytest; TEST_WORKERS=1 serial)
#   make test-unit  only tests/unit, which needs no service
#   make js      only the browser client's checks: tsc, then node --test (tests/js/)
#   make bench, bench-publish, bench-chat, bench-servers, bench-idle, soak, load
#                the tools in bench/ (bench/README.md says what each measures)
#
# Every target installs what it needs first: a virtualenv in .venv with the package and its
# extras (again only when pyproject.toml changes), for the client's checks Node.js and the
# pinned TypeScript in tests/js/node_modules (again only when its lock file changes), and
# for the tests a private Redis on port 6399 and a PostgreSQL server (scripts/services.sh
# explains how it finds one).

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
RUFF := $(VENV)/bin/ruff
STAMP := $(VENV)/.installed-stamp
EXTRAS := postgres,demo,nats,client,test,bench
LINT_PATHS := realtime project bench tests
JS := tests/js
JS_STAMP := $(JS)/node_modules/.installed-stamp

HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
# pytest-xdist workers for the integration and end-to-end tiers (their tests mostly wait on
# servers, databases and browsers, so more workers than cores still pays).
TEST_WORKERS ?= 3
BENCH_ARGS ?=
BENCH_IDLE_ARGS ?=
SOAK_ARGS ?=
LOAD_ARGS ?= --url http://$(HOST):$(PORT)

.PHONY: help venv install run test test-unit js services bench bench-publish bench-chat bench-servers bench-idle soak load lint format clean distclean

help:
	@echo "make run      serve the demo on http://$(HOST):$(PORT) (SQLite, one process)"
	@echo "make test     ruff, mypy, the client checks, then the tests on SQLite and PostgreSQL"
	@echo "make test-unit  only tests/unit: the tests that need no service (seconds, not minutes)"
	@echo "make js       the browser client: tsc (realtime.d.ts against the code), node --test"
	@echo "make lint     ruff check and ruff format --check, mypy, and tsc"
	@echo "make format   let ruff fix imports and formatting"
	@echo "make bench    fan-out: this app against naive Channels, over Redis and over NATS"
	@echo "              (bench.fanout; BENCH_ARGS=--help)"
	@echo "make bench-publish  what one publish costs, per API, on SQLite and PostgreSQL"
	@echo "make bench-chat  1,000 WebSocket clients in 100 rooms publishing to each other"
	@echo "make bench-servers  daphne, uvicorn, hypercorn and granian serving the app"
	@echo "make bench-idle  idle connections per process and resume of 10,000 missed events,"
	@echo "              realtime against naive Channels (BENCH_IDLE_ARGS=--help for options)"
	@echo "make soak     a minute of hostile anonymous churn against fresh servers; fails if the"
	@echo "              realtime tables' rows or the RSS keep growing (SOAK_ARGS=--help)"
	@echo "make load     WebSocket and SSE clients against running servers, e.g. make run's"
	@echo "              (bench.load; LOAD_ARGS='--url http://127.0.0.1:8000 --ws 100 --sse 20')"
	@echo "make install  create .venv and install the package with its extras"
	@echo "make clean    remove caches and .run/ (stops the tests' Redis); distclean: also .venv"
	@echo "              and tests/js/node_modules"

venv install: $(STAMP)

# The stamp is newer than pyproject.toml once the install succeeded.
$(STAMP): pyproject.toml
	@if [ ! -x $(PY) ]; then \
		echo "== creating the virtualenv $(VENV) =="; \
		if ! python3 -m venv $(VENV); then \
			echo "python3 -m venv failed; installing Debian's python3-venv and trying again"; \
			rm -rf $(VENV); \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv \
				&& python3 -m venv $(VENV); \
		fi; \
	fi
	@echo "== installing the package and its extras into $(VENV) (slow only the first time) =="
	@# grep drops one harmless warning per package that pip prints on machines whose pip
	@# config lists local index folders lacking that package.
	@set -o pipefail; \
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]' 2>&1 \
		| { grep -v "^WARNING: Location 'file:.*' is ignored: it is neither a file nor a directory" || true; }
	@touch $@

# Node.js and npm (scripts/services.sh installs Debian's if missing), then the pinned
# TypeScript; the stamp is newer than the lock file once `npm ci` succeeded.
$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	@scripts/services.sh node
	@echo "== installing the browser client's check tools (npm ci in $(JS)) =="
	@cd $(JS) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The browser client: its JavaScript and realtime.d.ts type-checked against each other
# (tsc --checkJs with tests/js/check.ts), then its unit tests on fake transports.
js: $(JS_STAMP)
	@echo "== browser client: tsc -p $(JS) =="; \
	$(JS)/node_modules/.bin/tsc -p $(JS); tsc=$$?; \
	echo "== browser client: node --test ($(JS)) =="; \
	(cd $(JS) && node --test); unit=$$?; \
	[ $$tsc = 0 ] && [ $$unit = 0 ]

run: install
	@echo "== applying migrations =="
	$(PY) manage.py migrate --no-input
	@echo "== serving the demo on http://$(HOST):$(PORT) (Ctrl-C stops it) =="
	$(PY) -m realtime.serve -b $(HOST) -p $(PORT) project.asgi:application

services:
	@scripts/services.sh

# services.sh prints the services' URLs on stdout; they are read straight from it (not from
# .run/services.env, which a concurrent `make bench` may rewrite). Each step runs even if an
# earlier one failed, so one run shows every problem; the summary decides the exit status.
test: install $(JS_STAMP)
	@svc="$$(scripts/services.sh)" || exit 1; set -a; eval "$$svc"; set +a; \
	: "$${REDIS_URL:?scripts/services.sh gave no REDIS_URL}"; \
	: "$${PG_DATABASE_URL:?scripts/services.sh gave no PG_DATABASE_URL}"; \
	export DJANGO_SETTINGS_MODULE=tests.settings; \
	echo; echo "== ruff check $(LINT_PATHS) =="; \
	$(RUFF) check $(LINT_PATHS); lint=$$?; \
	echo; echo "== mypy (strict) on realtime/ =="; \
	$(VENV)/bin/mypy; types=$$?; \
	echo; echo "== browser client: tsc -p $(JS) (realtime.d.ts against the code) =="; \
	$(JS)/node_modules/.bin/tsc -p $(JS); tsc=$$?; \
	echo; echo "== browser client: node --test ($(JS)) =="; \
	(cd $(JS) && node --test); jsunit=$$?; \
	echo; echo "== unit tests (tests/unit), with no service: no Redis, no database URL =="; \
	env -u REDIS_URL -u DATABASE_URL $(PY) -m pytest tests/unit $(PYTEST_ARGS); unit=$$?; \
	echo; echo "== integration and end-to-end tests on SQLite ($(TEST_WORKERS) workers) =="; \
	env -u DATABASE_URL $(PY) -m pytest -n $(TEST_WORKERS) -m "not postgresql" \
		tests/integration tests/e2e $(PYTEST_ARGS); \
	sqlite=$$?; \
	echo; echo "== integration and end-to-end tests on PostgreSQL ($$PG_DATABASE_URL) =="; \
	DATABASE_URL="$$PG_DATABASE_URL" $(PY) -m pytest -n $(TEST_WORKERS) tests/integration tests/e2e \
		$(PYTEST_ARGS); pg=$$?; \
	if [ -n "$(PYTEST_ARGS)" ] && ! { [ $$unit = 5 ] && [ $$sqlite = 5 ] && [ $$pg = 5 ]; }; then \
		for run in unit sqlite pg; do [ $${!run} = 5 ] && printf -v $$run 0; done; \
	fi; : "a selection (PYTEST_ARGS) may leave a tier with no test; not all of them"; \
	verdict() { case $$1 in 0) echo ok;; 5) echo "FAILED (no test ran)";; \
		*) echo "FAILED (exit $$1)";; esac; }; \
	echo; echo "== summary =="; \
	echo "ruff:                $$(verdict $$lint)"; \
	echo "mypy:                $$(verdict $$types)"; \
	echo "client types (tsc):  $$(verdict $$tsc)"; \
	echo "client unit tests:   $$(verdict $$jsunit)"; \
	echo "unit tests:          $$(verdict $$unit)"; \
	echo "tests on SQLite:     $$(verdict $$sqlite)"; \
	echo "tests on PostgreSQL: $$(verdict $$pg)"; \
	[ $$lint = 0 ] && [ $$types = 0 ] && [ $$tsc = 0 ] && [ $$jsunit = 0 ] && [ $$unit = 0 ] \
		&& [ $$sqlite = 0 ] && [ $$pg = 0 ]

# The tests that need nothing running: no Redis, no PostgreSQL, no server process.
test-unit: install
	env -u REDIS_URL -u DATABASE_URL DJANGO_SETTINGS_MODULE=tests.settings \
		$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# bench.fanout starts its own redis-server and nats-server on free ports; services.sh makes
# sure they are installed, and REDIS_URL names the tests' Redis should the benchmark want an
# existing one.
bench: install
	@scripts/services.sh nats || exit 1; \
	svc="$$(scripts/services.sh redis)" || exit 1; set -a; eval "$$svc"; set +a; \
	echo "== benchmark =="; \
	$(PY) -m bench.fanout $(BENCH_ARGS)

# Like bench; a scratch database on the PostgreSQL that services.sh finds, dropped after.
bench-publish: install
	@svc="$$(scripts/services.sh postgres)" || exit 1; set -a; eval "$$svc"; set +a; \
	echo "== publish path =="; \
	$(PY) -m bench.publish --pg-url "$$PG_DATABASE_URL" $(BENCH_PUBLISH_ARGS)

bench-chat: install
	@svc="$$(scripts/services.sh redis)" || exit 1; set -a; eval "$$svc"; set +a; \
	echo "== chat: 1,000 clients in 100 rooms =="; \
	$(PY) -m bench.chat $(BENCH_CHAT_ARGS)

bench-servers: install
	@svc="$$(scripts/services.sh redis)" || exit 1; set -a; eval "$$svc"; set +a; \
	echo "== ASGI servers =="; \
	$(PY) -m bench.servers $(BENCH_SERVERS_ARGS)

# Like bench: its own redis-server and SQLite file; one fresh daphne process per measurement.
bench-idle: install
	@svc="$$(scripts/services.sh redis)" || exit 1; set -a; eval "$$svc"; set +a; \
	echo "== idle connections and resume =="; \
	$(PY) -m bench.idle $(BENCH_IDLE_ARGS)

# Like bench-idle: its own SQLite file and daphne processes; several share the Redis of
# services.sh (REDIS_URL) under a key prefix of their own. Exit status 1 if anything grows.
soak: install
	@svc="$$(scripts/services.sh redis)" || exit 1; set -a; eval "$$svc"; set +a; \
	echo "== soak: hostile churn, rows and RSS =="; \
	$(PY) -m bench.soak $(SOAK_ARGS)

# Against servers that already run (make run, by default): starts nothing itself.
load: install
	$(PY) -m bench.load $(LOAD_ARGS)

lint: install $(JS_STAMP)
	$(RUFF) check $(LINT_PATHS)
	$(RUFF) format --check $(LINT_PATHS)
	$(VENV)/bin/mypy
	$(JS)/node_modules/.bin/tsc -p $(JS)

format: install
	$(RUFF) check --fix --select I $(LINT_PATHS)
	$(RUFF) format $(LINT_PATHS)

clean:
	@if [ -d .run ]; then scripts/services.sh stop; fi
	rm -rf .run .pytest_cache .ruff_cache .mypy_cache .coverage htmlcov build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(JS)/node_modules
