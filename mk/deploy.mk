# Deployment configurations (issue: make run, Envoy, Istio, Traefik, Kubernetes).
# `make test` validates every shipped configuration with the tool that consumes it: Envoy
# (--mode validate, loading the built modules), kubectl kustomize + the Kubernetes schemas,
# Traefik's documented structure, and mcpgw.toml (tests/deploy/).
TEST_TARGETS += test-deploy

.PHONY: test-deploy k8s-render

test-deploy: $(VENV)/.stamp wasm ## Validate the Envoy, Kubernetes and Traefik configurations
	@echo "==> deployment configurations (envoy validate, kubectl kustomize, schemas, Traefik)"
	@$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/deploy

k8s-render: $(VENV)/.stamp wasm ## Render envoy/gateway.yaml + mcpgw.toml into deploy/k8s (module sha256 from dist/)
	@$(VENV)/bin/python deploy/tools/render.py k8s
