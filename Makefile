# Sandesh local stack. The logic lives in devstack/ (see docs/local-stack.md);
# this file only names the commands.
.DEFAULT_GOAL := help
SHELL := bash

PY := .venv/bin/python
SERVICE ?=
PYTEST_ARGS ?=

.PHONY: help install run test stop logs status restart clean-data

help: ## show this help
	@echo "Sandesh local stack (docs/local-stack.md):"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "Ports and options come from environment variables, e.g. SANDESH_KAFKA_PORT=19092 make run"

install: ## create .venv, install Python packages, fetch the Kafka jars, build FerretDB
	@bash devstack/install.sh

run: ## start everything (daemonised), wait until ready, print where things are
	@if command -v python3 >/dev/null 2>&1; then python3 -m devstack.guard --for run; fi
	@bash devstack/install.sh
	@$(PY) -m devstack.run --for run

test: ## bring the stack up if needed, then run pytest (PYTEST_ARGS="-k foo -x")
	@if command -v python3 >/dev/null 2>&1; then python3 -m devstack.guard --for test; fi
	@bash devstack/install.sh
	@$(PY) -m devstack.run --for test
	@echo "==> $(PY) -m pytest tests $(PYTEST_ARGS)"
	@rc=0; $(PY) -m pytest tests $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "✗ pytest collected no tests (tests/ is empty or PYTEST_ARGS selects nothing)."; fi; \
	exit $$rc

stop: ## stop everything (waits until every program has exited)
	@if [ -x $(PY) ]; then $(PY) -m devstack.stop; else echo "The local stack is not running here: nothing to stop."; fi

logs: ## follow every log (Ctrl-C to leave)
	@if ls run/logs/*.log >/dev/null 2>&1; then tail -n 20 -F run/logs/*.log; else echo "No logs yet: start the stack with make run."; fi

status: ## show every program and its state
	@if [ -x $(PY) ]; then $(PY) -m devstack.status; else echo "The local stack is not running here (start it with make run)."; fi

restart: ## restart SERVICE=<name> (e.g. contacts), or every Sandesh service
	@if [ -x $(PY) ]; then $(PY) -m devstack.restart "$(SERVICE)"; else echo "The local stack is not running here: start it with make run."; exit 1; fi

clean-data: stop ## stop, then delete run/ (data, logs, tokens and secrets)
	@rm -rf run
	@echo "Deleted run/: the next make run starts from empty data with new secrets."

.PHONY: demo
demo: ## account, generated list, template, campaign sent with a progress bar (CONTACTS=1000)
	@$(PY) -m services.campaigns.demo --contacts $${CONTACTS:-1000}
