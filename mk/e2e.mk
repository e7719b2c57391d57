# The full-stack tests (tests/e2e): the stack `make run` starts (deploy/tools/run.py on free ports,
# with the tests' own mcpgw.toml), driven by the official MCP Python SDK client with its OAuth
# provider, and Traefik's ForwardAuth played against the sidecar's /verify.
TEST_TARGETS += test-e2e

.PHONY: test-e2e

test-e2e: run-build ## Full-stack tests over the `make run` stack (MCP SDK client, OAuth, Traefik ForwardAuth)
	@echo "==> full stack: make run's processes, the MCP SDK client, Traefik's ForwardAuth"
	@MCPGW_BIN_DIR=$(RUN_BIN_DIR) $(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/e2e
