#!/usr/bin/env bash
# Long chaos runs: scripts/chaos.sh [--duration 10m] [--seed N]
# Runs the chaos suite (tests/chaos.rs) in release mode against a fresh 5-node cluster
# and prints the nemesis schedule and the checker's summary table. Exits non-zero on any
# broken promise. The seed is printed at the start; pass it back to replay the schedule.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10m
seed=""
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="${2:?--duration needs a value, e.g. 10m}"; shift 2 ;;
    --duration=*) duration="${1#*=}"; shift ;;
    --seed) seed="${2:?--seed needs a number}"; shift 2 ;;
    --seed=*) seed="${1#*=}"; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "chaos.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$duration" in
  *[!0-9smh]*|"") echo "chaos.sh: --duration '$duration' is not like 90s, 10m or 1h" >&2; exit 2 ;;
esac

scripts/install-redis.sh
export REDFENCE_CHAOS_DURATION="$duration"
[ -n "$seed" ] && export REDFENCE_CHAOS_SEED="$seed"
exec cargo test --release --locked --all-features --test chaos chaos_run_keeps_every_promise -- --nocapture
