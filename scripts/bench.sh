#!/usr/bin/env bash
# Benchmarks redfence against a raw parallel SET NX baseline and rslock, in one run on
# the same local nodes, and prints one table with ratios.
#
#   scripts/bench.sh            # full run (several minutes)
#   scripts/bench.sh --quick    # every scenario briefly (under 3 minutes)
#   scripts/bench.sh --json     # also one JSON object per line
set -euo pipefail
cd "$(dirname "$0")/.."
for a in "$@"; do
  case "$a" in
    --quick|--json) ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument '$a' (see --help)" >&2; exit 2 ;;
  esac
done
scripts/install-redis.sh
exec cargo bench --locked --bench compare -- "$@"
