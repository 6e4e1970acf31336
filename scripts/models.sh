#!/usr/bin/env bash
# The model checks (src/models/, ignored in debug runs): every schedule of the small
# systems, and a counterexample for every mutation. Built in release: the checker visits
# tens of millions of states, about ten times faster than in a debug build. Part of
# scripts/test.sh; about six minutes on two cores.
#
#   scripts/models.sh                               # all model checks but the deep ones
#   scripts/models.sh models::mutex::tests::mutex_is_safe_on_three   # one (a name filter)
#   scripts/models.sh --deep                        # the deep runs only (tens of minutes,
#                                                   # several GiB of memory)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--deep" ]; then
  shift
  exec cargo test --locked --release --lib -- --ignored --nocapture --test-threads 1 models::mutex::tests::deep_ "$@"
fi
filter=("$@")
[ ${#filter[@]} -gt 0 ] || filter=(models::)
exec cargo test --locked --release --lib -- --ignored --nocapture --test-threads 2 --skip ::deep_ "${filter[@]}"
