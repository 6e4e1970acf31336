#!/usr/bin/env bash
# The deep model checks (src/models/): every schedule of the small systems, not only the
# shallow depth the default test run covers. Built in release: the checker visits tens of
# millions of states, about ten times faster than in a debug build. Part of
# scripts/test.sh; about six minutes on two cores.
#
#   scripts/models.sh                               # all deep checks
#   scripts/models.sh models::mutex::tests::mutex_is_safe_on_three   # one (a name filter)
set -euo pipefail
cd "$(dirname "$0")/.."
filter=("$@")
[ ${#filter[@]} -gt 0 ] || filter=(models::)
exec cargo test --locked --release --lib -- --ignored --nocapture --test-threads 1 "${filter[@]}"
