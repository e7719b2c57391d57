# The sidecar's login part (issue 3): the official MCP Python SDK's OAuth client (discovery,
# dynamic registration, PKCE login at the local OpenID provider, consent, token, refresh) against
# the real sidecar binary, a real Redis and tests/oidc (tests/py/oauth_flow.py). The Rust flow
# tests (sidecar/tests/flow.rs) run in `cargo test --workspace`.
TEST_TARGETS += test-sidecar-login

.PHONY: test-sidecar-login

test-sidecar-login: $(VENV)/.stamp node_modules/.stamp .cache/redis.stamp ## The MCP SDK's OAuth client against the sidecar
	@echo "==> sidecar login: MCP Python SDK OAuth client against the sidecar, Redis and oidc-provider"
	@$(CARGO) build --quiet --locked -p mcpgw-sidecar --bin mcpgw-sidecar
	@MCPGW_BIN_DIR=$(RUN_BIN_DIR) $(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/py/oauth_flow.py
