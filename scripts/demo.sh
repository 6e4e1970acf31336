#!/usr/bin/env bash
# One command to see redfence work: installs redis-server when it is missing (Debian and
# Ubuntu; says what to install elsewhere), builds the CLI, and runs `redfence demo`:
# a local 5-node cluster, workers contending for one lock through killed, frozen and
# paused parts, then a check of every promise.
#
#   scripts/demo.sh               # 20 seconds
#   scripts/demo.sh --seconds 60  # arguments go to `redfence demo`
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-redis.sh
cargo build --release --locked --features cli --bin redfence
exec target/release/redfence demo "$@"
