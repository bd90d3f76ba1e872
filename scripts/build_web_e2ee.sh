#!/usr/bin/env bash
# Builds the browser app's end-to-end encryption module (crate
# missive-e2ee-wasm) into crates/server/web/e2ee/, where the server's
# build embeds it: run this before `cargo build` for a binary whose
# browser app encrypts. Without it the app still runs and shows encrypted
# messages as unreadable. Needs the wasm32-unknown-unknown target and
# wasm-bindgen-cli at the version Cargo.lock pins; installs both when
# missing (rustup, crates.io).
set -euo pipefail
cd "$(dirname "$0")/.."

target=wasm32-unknown-unknown
if ! rustup target list --installed | grep -qx "$target"; then
    echo "== adding the $target target"
    rustup target add "$target"
fi

# wasm-bindgen's CLI must be the exact version of the crate it reads.
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $version"; then
    echo "== installing wasm-bindgen-cli $version"
    cargo install wasm-bindgen-cli --version "$version"
fi

cargo build --locked --profile wasm --target "$target" -p missive-e2ee-wasm
out=crates/server/web/e2ee
rm -rf "$out"
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section --out-dir "$out" --out-name e2ee \
    "target/$target/wasm/missive_e2ee_wasm.wasm"
ls -l "$out"
