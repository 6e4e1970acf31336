#!/usr/bin/env bash
# The deep model checks (src/models/): every schedule of the small systems, not only the
# shallow depth the default test run covers. Built in release: the checker visits tens of
# millions of states, about ten times faster than in a debug build.
#
#   scripts/models.sh                       # all deep checks
#   scripts/models.sh mutex_is_safe_on_three  # one of them (a test-name filter)
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --locked --release --lib models -- --ignored --nocapture --test-threads 1 "$@"
