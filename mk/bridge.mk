# The bridge (issue 4): a streamable-HTTP MCP endpoint in front of a stdio MCP server.
# `cargo test --workspace` runs bridge/tests (HTTP rules, faults); `make test` adds the end-to-end
# tests in tests/bridge/ (the official MCP Python SDK against real stdio servers through the built
# binary). `make bench` runs the bridge side by side with the seeds' stdio proxy and supergateway
# and writes the table to target/bench-bridge.txt.
TEST_TARGETS  += test-bridge
BENCH_TARGETS += bench-bridge

BRIDGE_DEBUG   := $(or $(CARGO_TARGET_DIR),target)/debug
BRIDGE_RELEASE := $(or $(CARGO_TARGET_DIR),target)/release

.PHONY: test-bridge bench-bridge

test-bridge: $(VENV)/.stamp node_modules/.stamp ## Bridge end-to-end tests (Python SDK, real MCP servers)
	@echo "==> bridge: end-to-end with the official MCP Python SDK (server-everything, server-memory, mcp-server-time)"
	@$(CARGO) build --quiet --locked -p mcpgw-bridge --bin mcpgw-bridge
	@MCPGW_BRIDGE_BIN=$(BRIDGE_DEBUG)/mcpgw-bridge $(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/bridge

bench-bridge: $(VENV_BENCH)/.stamp node_modules/.stamp ## Bridge vs the seeds' proxy and supergateway (same echo child)
	@echo "==> bridge benchmark: mcpgw-bridge, the seeds' mcp-streamablehttp-proxy, supergateway"
	@$(CARGO) build --quiet --locked --release -p mcpgw-bridge --bins
	@$(BRIDGE_RELEASE)/mcpgw-bridge-bench --bridge $(BRIDGE_RELEASE)/mcpgw-bridge \
	  --echo $(BRIDGE_RELEASE)/mcpgw-echo-child \
	  --seeds-proxy $(VENV_BENCH)/bin/mcp-streamablehttp-proxy \
	  --supergateway node_modules/.bin/supergateway \
	  --logs $(or $(CARGO_TARGET_DIR),target)/bench-logs | tee $(or $(CARGO_TARGET_DIR),target)/bench-bridge.txt
