# `make run`: the whole gateway as local processes on one origin (deploy/tools/run.py), configured
# by mcpgw.toml (or CONFIG=other.toml). Ctrl-C stops everything it started. The state (Redis' data)
# stays in state_dir across runs; FRESH=1 starts empty.
CONFIG      ?= mcpgw.toml
RUN_BIN_DIR := $(or $(CARGO_TARGET_DIR),target)/debug

.PHONY: run run-build

run-build: deps wasm
	@echo "==> building mcpgw-sidecar and mcpgw-bridge"
	@$(CARGO) build --quiet --locked -p mcpgw-sidecar -p mcpgw-bridge --bin mcpgw-sidecar --bin mcpgw-bridge

run: run-build ## Start the whole gateway on http://127.0.0.1:8080 (see mcpgw.toml); Ctrl-C stops it
	@$(VENV)/bin/python deploy/tools/run.py --config $(CONFIG) --bin-dir $(RUN_BIN_DIR) $(if $(FRESH),--fresh)
