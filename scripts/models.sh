#!/usr/bin/env bash
# The model checks (src/models/, ignored in debug runs): every schedule of the small
# systems, and a counterexample for every mutation. Built in release: the checker visits
# tens of millions of states, about ten times faster than in a debug build. Part of
# scripts/test.sh; about six minutes on two cores, up to about 10 GiB of memory.
#
#   scripts/models.sh                               # all model checks
#   scripts/models.sh models::mutex::tests::mutex_is_safe_on_three   # one (a name filter)
set -euo pipefail
cd "$(dirname "$0")/.."
filter=("$@")
[ ${#filter[@]} -gt 0 ] || filter=(models::)
exec cargo test --locked --release --lib -- --ignored --nocapture --test-threads 2 "${filter[@]}"
