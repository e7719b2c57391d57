//! An in-process proxy-wasm host on wasmtime (test tree only): loads the built mcpgw filters and
//! drives them through the proxy-wasm ABI the way Envoy does.
