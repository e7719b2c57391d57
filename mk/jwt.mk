# The JWT filter (issue 2: data plane, JWT; issue 17: as an Envoy dynamic module). Its unit tests
# and its end-to-end tests in real Envoy (filters/jwt/tests/) run in `make test`'s `cargo test
# --workspace`, after `make wasm` and `make native` have built dist/mcpgw_filter_jwt.wasm and
# dist/libmcpgw_filter_jwt.so, which the tests load.
WASM_CRATES   += mcpgw-filter-jwt
NATIVE_CRATES += mcpgw-filter-jwt
BENCH_TARGETS += bench-jwt

.PHONY: test-jwt bench-jwt

test-jwt: $(VENV)/.stamp wasm native ## Only the JWT part: core's verification tests and the filter in Envoy
	@$(CARGO) test --locked -q -p mcpgw-core -p mcpgw-filter-jwt

# The load generator: wrk from Debian's packages.
.cache/wrk.stamp:
	@mkdir -p .cache
	@command -v wrk >/dev/null || { \
	  echo "==> installing wrk from Debian's packages"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk >/dev/null; }
	@touch $@

bench-jwt: $(VENV)/.stamp .cache/wrk.stamp wasm native ## Envoy + our JWT modules (proxy-wasm, dynamic) vs Envoy's jwt_authn (wrk)
	@echo "==> JWT filter vs native jwt_authn (median of MCPGW_BENCH_ROUNDS=$${MCPGW_BENCH_ROUNDS:-3} rounds of MCPGW_BENCH_SECONDS=$${MCPGW_BENCH_SECONDS:-3} s per row)"
	@$(CARGO) build --quiet --locked --profile wasm --target $(WASM_TARGET) -p mcpgw-probe
	@MCPGW_PROBE_WASM=$(abspath $(WASM_OUT))/mcpgw_probe.wasm $(CARGO) bench --locked -q -p mcpgw-filter-jwt --bench envoy
