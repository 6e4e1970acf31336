#!/usr/bin/env bash
# Formatting, lints and docs, as CI runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
scripts/msrv.sh
cargo clippy --locked --all-targets --all-features -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --all-features
