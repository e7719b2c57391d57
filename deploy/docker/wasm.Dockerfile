# The mcpgw proxy-wasm modules, served over HTTP inside the cluster (deploy/k8s/components/wasm).
# Build from the repository root after `make wasm`:
#   docker build -f deploy/docker/wasm.Dockerfile -t mcpgw-wasm:0.1.0 .
FROM busybox:1.37-musl
COPY dist/mcpgw_filter_jwt.wasm dist/mcpgw_filter_policy.wasm /wasm/
USER 65532:65532
EXPOSE 8080
# -f: foreground, so the container's PID 1 is httpd and SIGTERM stops it.
CMD ["httpd", "-f", "-p", "8080", "-h", "/wasm"]
