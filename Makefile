# office365-connector: the README's commands. Everything a target needs is
# installed by the target itself (a pinned Python venv in .venv, cargo tools).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
export SAM_CLI_TELEMETRY := 0
# Tools from the venv (cargo-lambda, zig, moto_server, sam) come first on PATH.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help venv test test-rust test-clients test-browser lint lint-template fmt up down build bench

help:
	@echo "make test   - every test (brings its own local stack up and down)"
	@echo "make up     - start the local stack in the background (moto + template resources,"
	@echo "              microsoft-sim, the functions under cargo lambda watch, schedules, SQS sources)"
	@echo "make down   - stop what make up started"
	@echo "make lint   - rustfmt, clippy, cfn-lint, sam validate --lint"
	@echo "make build  - release Lambda binaries with cargo lambda (arm64)"
	@echo "make demo   - the whole product end to end on the local stack, with a report"
	@echo "make bench  - speed, memory and cost, side by side with Python (target/bench/report.md)"

$(STAMP): infra/local/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r infra/local/requirements.txt
	touch $@

venv: $(STAMP)

lint-template: $(STAMP)
	cfn-lint template.yaml
	sam validate --lint -t template.yaml

lint: lint-template
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all

test-rust: $(STAMP)
	cargo test --workspace --locked

test-clients: $(STAMP)
	cargo build --locked -p microsoft-sim
	$(PY) -m pytest -q infra/microsoft-sim/clients

# A real browser (Debian's chromium, driven by the pinned playwright-core) through the
# consent and sign-in pages; screenshots in target/browser/.
test-browser: $(STAMP)
	@command -v chromium >/dev/null || { apt-get update && apt-get install -y chromium; }
	cd tests/browser && npm ci --no-audit --no-fund
	cargo build --locked -p consent-callback --example local_server
	cd tests/browser && node --test consent.test.mjs

test: lint test-rust test-clients test-browser

# make up [TIME_FACTOR=60] [WORLD=path.json] [AUTO_APPROVE=1]: moto + template resources,
# microsoft-sim, the functions under cargo lambda watch, schedules and SQS event sources.
TIME_FACTOR ?= 1
up: $(STAMP)
	cargo build --locked -p local-stack -p microsoft-sim
	target/debug/local-stack up --state-dir .local --time-factor $(TIME_FACTOR) \
		$(if $(WORLD),--world $(WORLD)) $(if $(AUTO_APPROVE),--auto-approve)

down:
	@if [ -x target/debug/local-stack ]; then target/debug/local-stack down --state-dir .local; else echo "nothing to stop"; fi

build: $(STAMP)
	cargo lambda build --release --arm64 --locked

# make demo: the whole product on the local stack (the four functions under cargo lambda
# watch, the template's SQS sources, one scheduled round fired by the driver), driven
# headlessly through the real pages; a per-user report; exit 0 only if every step passed.
# DEMO_ARGS: e.g. --messages 200 (per generated folder), --keep (leave the stack running).
DEMO_ARGS ?=
.PHONY: demo
demo: $(STAMP)
	cargo build --locked -p local-stack -p microsoft-sim -p connectorctl -p demo \
		-p consent-callback -p mail-sync -p calendar-sync -p teams-post
	target/debug/demo --state-dir .local/demo $(DEMO_ARGS)

# Not part of `make test`: release builds, then every measurement of issue 9 in one run.
BENCH_FUNCTIONS := mail-sync calendar-sync consent-callback teams-post
BENCH_OUT       := target/bench
BENCH_ARGS      ?=
bench: $(STAMP)
	cargo build --release --locked $(addprefix -p ,$(BENCH_FUNCTIONS)) -p connector-bench
	mkdir -p $(BENCH_OUT)
	cargo bench --locked -p connector-bench --bench engine | tee $(BENCH_OUT)/engine.txt
	target/release/connector-bench run --out $(BENCH_OUT) $(BENCH_ARGS)
	$(PY) bench/report.py $(BENCH_OUT)
	@cat $(BENCH_OUT)/report.md
