# The MCP authorization policy filter (issue 5): filters/policy (the proxy-wasm module),
# core/src/policy/ + mcp/ (the engine), filters/wasmhost (an in-process proxy-wasm host on
# wasmtime that drives the built module in tests and in the benchmark).
# Its tests run in `cargo test --workspace` (they load dist/mcpgw_filter_policy.wasm, which
# `make wasm` builds first); the end-to-end set starts a real Envoy with the JWT filter in front.
WASM_CRATES   += mcpgw-filter-policy
BENCH_TARGETS += bench-policy

.PHONY: test-policy bench-policy

test-policy: $(VENV)/.stamp wasm ## Only the policy tests: engine table, wasmtime host, real Envoy
	@$(CARGO) test --locked -q -p mcpgw-core --lib policy
	@$(CARGO) test --locked -q -p mcpgw-wasmhost

bench-policy: $(VENV)/.stamp .cache/wrk.stamp wasm ## Policy decision cost: instructions via wasmtime, Envoy req/s, p50 and CPU with/without the filter, beside the proxy-wasm floor
	@echo "==> policy filter: module size, decision cost, Envoy overhead (50-rule policy; median of MCPGW_BENCH_ROUNDS=$${MCPGW_BENCH_ROUNDS:-3} rounds of MCPGW_BENCH_SECONDS=$${MCPGW_BENCH_SECONDS:-3} s per row)"
	@$(CARGO) build --quiet --locked --profile wasm --target $(WASM_TARGET) -p mcpgw-probe --example policy_floor
	@MCPGW_POLICY_FLOOR_WASM=$(abspath $(WASM_OUT))/examples/policy_floor.wasm $(CARGO) bench --locked -q -p mcpgw-wasmhost --bench policy
