#!/usr/bin/env bash
# Build the wasm example apps and copy them to examples/wasm/out/:
#   hello.wasm exit-code.wasm trap.wasm sleeper.wasm   WASI preview1 core modules
#   sandbox-probe.wasm                                 WASI preview1: tries to leave the sandbox
#   hello-p2.wasm exit-code-p2.wasm                    WASI preview2 command components
#   http-hello.wasm                                    wasi:http/incoming-handler component
set -euo pipefail
cd "$(dirname "$0")"
if command -v rustup >/dev/null; then
    rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
    rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
fi
cargo build --release --target wasm32-wasip1 -p hello -p exit-code -p trap -p sleeper -p sandbox-probe
cargo build --release --target wasm32-wasip2 -p hello -p exit-code -p http-hello
mkdir -p out
for p in hello exit-code trap sleeper sandbox-probe; do
    cp "target/wasm32-wasip1/release/$p.wasm" "out/$p.wasm"
done
for p in hello exit-code; do
    cp "target/wasm32-wasip2/release/$p.wasm" "out/$p-p2.wasm"
done
cp target/wasm32-wasip2/release/http_hello.wasm out/http-hello.wasm
ls -l out/
