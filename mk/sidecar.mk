# The sidecar's core (issue 3): its handler tests (sidecar/tests/handlers/) run in `make test`'s
# `cargo test --workspace`; nothing else to add there. `make bench-sidecar` (part of `make bench`)
# compares /verify with the seeds' auth service (mcp-oauth-dynamicclient 0.2.0 from .venv-bench) on
# the same Redis with wrk, and reports /token and /register rates. The table goes to
# target/bench-sidecar.txt as well.
BENCH_TARGETS += bench-sidecar

.PHONY: bench-sidecar

bench-sidecar: $(VENV_BENCH)/.stamp .cache/redis.stamp .cache/wrk.stamp ## /verify vs the seeds' auth service; /token, /register rates (wrk)
	@echo "==> sidecar /verify vs the seeds' auth service (MCPGW_BENCH_SECONDS=$${MCPGW_BENCH_SECONDS:-5} per row)"
	@mkdir -p $(or $(CARGO_TARGET_DIR),target)
	@$(CARGO) bench --locked -q -p mcpgw-sidecar --bench verify | tee $(or $(CARGO_TARGET_DIR),target)/bench-sidecar.txt
