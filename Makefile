# mcpgw: `make run` starts the gateway, `make test` runs every test, `make bench` measures.
#
# Everything the targets need is installed on first use, into the project (.venv, node_modules)
# or from Debian's packages (redis-server), and skipped quietly when already there.
# Each part of the project adds its own targets in mk/<part>.mk:
#   TEST_TARGETS  += test-<part>    run by `make test` after the Rust test suite
#   BENCH_TARGETS += bench-<part>   run by `make bench`
#   WASM_CRATES   += <crate>        proxy-wasm modules built into dist/ by `make wasm`
#   NATIVE_CRATES += <crate>        Envoy dynamic modules built into dist/ by `make native`

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV        := .venv
VENV_BENCH  := .venv-bench
PIP_FLAGS   := -q --disable-pip-version-check --no-input
CARGO       ?= cargo
WASM_TARGET := wasm32-wasip1
WASM_OUT    := $(or $(CARGO_TARGET_DIR),target)/$(WASM_TARGET)/wasm

TEST_TARGETS  :=
BENCH_TARGETS :=
WASM_CRATES   :=
NATIVE_CRATES :=
NATIVE_OUT  := $(or $(CARGO_TARGET_DIR),target)/native

include $(sort $(wildcard mk/*.mk))

.PHONY: help deps deps-bench wasm native test test-rust lint bench fmt clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

deps: $(VENV)/.stamp node_modules/.stamp .cache/redis.stamp .cache/wasm-target.stamp ## Install what the tests and `make run` need

deps-bench: deps $(VENV_BENCH)/.stamp ## Also install the benchmark peers (the seeds' packages)

$(VENV)/.stamp: tests/requirements.txt
	@echo "==> installing Envoy, the MCP Python SDK and Python MCP servers into $(VENV)"
	@python3 -m venv $(VENV)
	@$(VENV)/bin/pip install $(PIP_FLAGS) -r $<
	@touch $@

$(VENV_BENCH)/.stamp: tests/requirements-bench.txt
	@echo "==> installing the benchmark peers into $(VENV_BENCH)"
	@python3 -m venv $(VENV_BENCH)
	@$(VENV_BENCH)/bin/pip install $(PIP_FLAGS) -r $<
	@touch $@

node_modules/.stamp: package.json package-lock.json
	@echo "==> installing npm MCP servers and the OpenID provider into node_modules"
	@npm ci --no-audit --no-fund --loglevel=error
	@touch $@

.cache/redis.stamp:
	@mkdir -p .cache
	@command -v redis-server >/dev/null || { \
	  echo "==> installing redis-server from Debian's packages"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }
	@touch $@

.cache/wasm-target.stamp:
	@mkdir -p .cache
	@rustup target list --installed | grep -qx $(WASM_TARGET) || { \
	  echo "==> adding the $(WASM_TARGET) Rust target"; rustup target add $(WASM_TARGET); }
	@touch $@

wasm: .cache/wasm-target.stamp ## Build the proxy-wasm modules into dist/
	@$(CARGO) build --quiet --locked --profile wasm --target $(WASM_TARGET) $(addprefix -p ,$(WASM_CRATES))
	@mkdir -p dist
	@for c in $(WASM_CRATES); do f=$$(echo $$c | tr - _).wasm; cp $(WASM_OUT)/$$f dist/$$f; \
	  printf '  dist/%-28s %7d bytes\n' $$f $$(stat -c %s dist/$$f); done

native: ## Build the Envoy dynamic modules (for the Envoy in .venv) into dist/
	@$(CARGO) build --quiet --locked --profile native $(addprefix -p ,$(NATIVE_CRATES))
	@mkdir -p dist
	@for c in $(NATIVE_CRATES); do f=lib$$(echo $$c | tr - _).so; cp $(NATIVE_OUT)/$$f dist/$$f; \
	  printf '  dist/%-28s %7d bytes\n' $$f $$(stat -c %s dist/$$f); done

test: deps wasm native ## Run every test: unit, handler, real-stack end-to-end, config validation
	@$(MAKE) test-rust $(TEST_TARGETS)
	@echo "==> all tests passed"

test-rust:
	@echo "==> cargo test (workspace)"
	@$(CARGO) test --locked --workspace --all-targets -q
	@echo "==> core builds for $(WASM_TARGET)"
	@$(CARGO) check --quiet --locked -p mcpgw-core --target $(WASM_TARGET)

lint: ## Formatting and clippy, as CI would
	@$(CARGO) fmt --all --check
	@$(CARGO) clippy --locked --workspace --all-targets -q -- -D warnings

bench: deps-bench wasm ## Benchmarks against the named peers, side by side
	@for t in $(BENCH_TARGETS); do $(MAKE) $$t; done

fmt:
	@$(CARGO) fmt --all

clean: ## Remove build output (keeps installed components)
	@$(CARGO) clean
	@rm -rf dist
