# The JWT filter (issue: data plane, JWT).
WASM_CRATES += mcpgw-filter-jwt
