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

.PHONY: help null-device venv test test-rust test-clients test-browser lint lint-template fmt up down build bench sam-build

help:
	@echo "make test   - every test (brings its own local stack up and down)"
	@echo "make up     - start the local stack in the background (moto + template resources,"
	@echo "              microsoft-sim, the functions under cargo lambda watch, schedules, SQS sources)"
	@echo "make down   - stop what make up started"
	@echo "make lint   - rustfmt, clippy, cfn-lint, sam validate --lint"
	@echo "make build  - release Lambda binaries with cargo lambda (arm64)"
	@echo "make sam-build - sam build of template.yaml (debug profile), every function's bootstrap checked"
	@echo "make demo   - the whole product end to end on the local stack, with a report"
	@echo "make bench  - speed, memory and cost, side by side with Python (target/bench/report.md)"

# A /dev/null that is a regular file makes cargo's target probe read what other processes
# discarded as its source (infra/local/null-device.sh): checked once per make run, before
# anything that builds.
null-device:
	@infra/local/null-device.sh

$(STAMP): infra/local/requirements.txt | null-device
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r infra/local/requirements.txt
	touch $@

venv: $(STAMP)

# cfn-lint and SAM's linter, then our own checks of what they miss (runtime names, 6-field
# cron / rate syntax, batch sizes and windows, dangling references, ...: infra/local/src/checks.rs).
lint-template: $(STAMP)
	cfn-lint template.yaml
	sam validate --lint -t template.yaml
	cargo run --locked --quiet -p local-stack -- check --template template.yaml

lint: lint-template
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all

test-rust: $(STAMP)
	cargo test --workspace --locked

# The binaries these two use (target/debug/microsoft-sim, target/debug/examples/local_server)
# are what `cargo test --workspace` builds: after test-rust this is a no-op, where a
# `cargo build -p ...` would resolve features differently and rebuild about 80 crates.
WORKSPACE_BINARIES := cargo test --workspace --locked --no-run --quiet

test-clients: $(STAMP)
	$(WORKSPACE_BINARIES)
	$(PY) -m pytest -q infra/microsoft-sim/clients

# A real browser (Debian's chromium, driven by the pinned playwright-core) through the
# consent and sign-in pages, the administrator's view and the user's settings;
# screenshots in target/browser/.
test-browser: $(STAMP)
	@command -v chromium >/dev/null || { apt-get update && apt-get install -y chromium; }
	cd tests/browser && npm ci --no-audit --no-fund
	$(WORKSPACE_BINARIES)
	cd tests/browser && node --test consent.test.mjs admin.test.mjs meeting.test.mjs

# The functions' instruction set (template parameter `Architecture`): arm64, the
# template's default, when this toolchain has the aarch64 Rust target; otherwise
# x86_64, since a machine of this kind cannot fetch another target (rustup is offline).
# Override with ARCH=arm64|x86_64.
ARCH ?= $(shell test -d "$$(rustc --print sysroot)/lib/rustlib/aarch64-unknown-linux-gnu" && echo arm64 || echo x86_64)

# `sam build` as `sam deploy` packages the template: every AWS::Serverless::Function
# must come out as an executable bootstrap for the architecture built ($(ARCH)).
# SAM_BUILD_MODE=debug is SAM's documented switch (its cargo-lambda builder then drops
# --release): this checks that the template builds, and a debug build costs a fraction
# of a release one. Output under target/, gitignored.
SAM_TEMPLATE  ?= template.yaml
SAM_BUILD_DIR := target/sam/build
# What sam build adds under target/ (about 1.6 GB: its cargo-lambda build of the four functions, the
# copies in target/lambda and target/sam), with room to spare. The linker writes its
# output through a memory map: on a full disk it dies of SIGBUS, and cargo-zigbuild
# then exits 1 with no message at all. Better to say so before building.
SAM_BUILD_MIN_FREE_MB ?= 2000
define resources
	df -Pm target | awk 'NR==2 {print "disk: " $$4 " MB free of " $$2 " MB on " $$6}'; \
	awk '/^MemAvailable:/ {print "memory: " int($$2/1024) " MiB available"}' /proc/meminfo
endef
sam-build: $(STAMP)
	@echo "sam build for Architecture=$(ARCH)"
	rm -rf $(SAM_BUILD_DIR)
	@mkdir -p target; $(resources); \
	free_mb=$$(df -Pm target | awk 'NR==2 {print $$4}'); \
	test "$$free_mb" -ge $(SAM_BUILD_MIN_FREE_MB) || { \
		echo "sam-build needs about $(SAM_BUILD_MIN_FREE_MB) MB free under target/, $$free_mb MB are: free some disk (cargo clean)"; exit 1; }
	@# One retry, said aloud: a linker killed by a signal (out of memory or disk) leaves no
	@# message, so the machine's state is printed with the failure. A real build error
	@# fails both attempts.
	@for attempt in 1 2; do \
		if SAM_BUILD_MODE=debug sam build --template-file $(SAM_TEMPLATE) --base-dir $(CURDIR) \
			--build-dir $(SAM_BUILD_DIR) --cache-dir target/sam/cache \
			--parameter-overrides Architecture=$(ARCH); then break; fi; \
		echo "sam build failed (attempt $$attempt of 2)"; $(resources); \
		test $$attempt = 1 || exit 1; \
	done
	@functions=$$(awk '/^  [A-Za-z0-9]+:[ ]*$$/ {name=$$1; sub(":", "", name)} \
		/^    Type: AWS::Serverless::Function/ {print name}' $(SAM_TEMPLATE)); \
	if [ "$(ARCH)" = x86_64 ]; then machine="3e 00"; else machine="b7 00"; fi; \
	test -n "$$functions" || { echo "no AWS::Serverless::Function in $(SAM_TEMPLATE)"; exit 1; }; \
	for f in $$functions; do \
		b=$(SAM_BUILD_DIR)/$$f/bootstrap; \
		test -x "$$b" || { echo "sam build left no executable $$b"; exit 1; }; \
		test "$$(od -An -tx1 -N4 "$$b" | tr -s ' ')" = " 7f 45 4c 46" || { echo "$$b is not an ELF binary"; exit 1; }; \
		test "$$(od -An -tx1 -j18 -N2 "$$b" | tr -s ' ')" = " $$machine" || { echo "$$b is not built for $(ARCH)"; exit 1; }; \
		echo "sam build: $$b ($$(du -h "$$b" | cut -f1))"; \
	done

test: lint test-rust test-clients test-browser sam-build

# make test builds from scratch: incremental compilation would only add its caches
# (about 4 GB of target/debug/incremental on a clean clone) and their writing time.
test: export CARGO_INCREMENTAL := 0

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
	@echo "cargo lambda build for $(ARCH)"
	cargo lambda build --release --locked $(if $(filter arm64,$(ARCH)),--arm64,--x86-64)

# make demo: the whole product on the local stack (the four functions under cargo lambda
# watch, the template's SQS sources, one scheduled round fired by the driver), driven
# headlessly through the real pages; a per-user report; exit 0 only if every step passed.
# DEMO_ARGS: e.g. --messages 200 (per generated folder), --keep (leave the stack running).
DEMO_ARGS ?=
.PHONY: demo
demo: $(STAMP)
	cargo build --locked -p local-stack -p microsoft-sim -p connectorctl -p demo \
		-p consent-callback -p mail-sync -p calendar-sync -p teams-post -p event-publisher -p subscriptions
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
