#!/usr/bin/env bash
# Formatting, lints and docs, as CI runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
scripts/msrv.sh
cargo clippy --locked --all-targets --all-features -- -D warnings
# And with no features: `tracing` and `metrics` compile code in and out.
cargo clippy --locked --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --all-features
