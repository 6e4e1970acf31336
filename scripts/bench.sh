#!/usr/bin/env bash
# Benchmarks redfence against a raw parallel SET NX baseline and rslock, in one run on
# the same local nodes, and prints one table with ratios.
#
#   scripts/bench.sh            # full run (several minutes)
#   scripts/bench.sh --quick    # every scenario briefly (under 3 minutes)
#   scripts/bench.sh --json     # also one JSON object per line
#   scripts/bench.sh --only 2,3 # just those scenarios
#   scripts/bench.sh --only 7 --hold 300   # hold scenario 7's locks 5 minutes
#   scripts/bench.sh --only 7 --locks 100000 --hold 300   # just 100,000 of them
set -euo pipefail
cd "$(dirname "$0")/.."
prev=
only=
for a in "$@"; do
  if [ "$prev" = --hold ]; then
    [[ "$a" =~ ^[0-9]+$ ]] || { echo "bench.sh: --hold wants whole seconds like 300, not '$a'" >&2; exit 2; }
    prev=; continue
  fi
  if [ "$prev" = --locks ]; then
    [[ "$a" =~ ^[0-9]+$ ]] || { echo "bench.sh: --locks wants a number of locks like 100000, not '$a'" >&2; exit 2; }
    prev=; continue
  fi
  if [ "$prev" = --only ]; then
    [[ "$a" =~ ^[1-9](,[1-9])*$ ]] || { echo "bench.sh: --only wants scenario numbers 1-9 like 2,3, not '$a'" >&2; exit 2; }
    only=$a
    prev=; continue
  fi
  case "$a" in
    --quick|--json|--only|--hold|--locks) ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument '$a' (see --help)" >&2; exit 2 ;;
  esac
  prev=$a
done
[ "$prev" != --locks ] || { echo "bench.sh: --locks needs a number, like --locks 100000" >&2; exit 2; }
[ "$prev" != --hold ] || { echo "bench.sh: --hold needs seconds, like --hold 300" >&2; exit 2; }
[ "$prev" != --only ] || { echo "bench.sh: --only needs scenario numbers, like --only 2,3" >&2; exit 2; }
scripts/install-redis.sh
# Scenario 7 (held locks) is a binary of its own: it counts allocations, which must not
# weigh on the others.
if [ -z "$only" ] || [[ ",$only," != ",7," ]]; then
  cargo bench --locked --bench compare -- "$@"
fi
if [ -z "$only" ] || [[ ",$only," == *,7,* ]]; then
  cargo bench --locked --bench held -- "$@"
fi
