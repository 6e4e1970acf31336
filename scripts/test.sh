#!/usr/bin/env bash
# The test command: installs redis-server when it is missing, then runs every test
# (unit, property, model and integration tests against real redis-server processes).
#
#   scripts/test.sh            # whole suite, the examples, then the model checks
#   scripts/test.sh --test acquire   # extra arguments go to `cargo test` (and skip the
#                                    # model checks)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-redis.sh

# Integration tests start their own redis-server processes on free loopback ports and
# stop them (by PID) when each test ends, on failure too.
cargo test --locked --all-features "$@"

# Every example, run against the nodes it starts; then the model checks (src/models/),
# ignored by the debug run above, in release.
if [ $# -eq 0 ]; then
  scripts/examples.sh
  scripts/models.sh
fi
