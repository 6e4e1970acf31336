#!/usr/bin/env bash
# Builds and runs every example in examples/, each against local nodes it starts itself
# through the test kit; fails if any example fails (each checks what it shows). Part of
# scripts/test.sh.
#
#   scripts/examples.sh                 # all of them
#   scripts/examples.sh fenced_sql      # one
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-redis.sh >/dev/null
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for f in examples/*.rs; do names+=("$(basename "$f" .rs)"); done
fi
for name in "${names[@]}"; do
  echo "== cargo run --example $name"
  # All features: what the test command built already, and what `observability` needs.
  cargo run --locked --quiet --all-features --example "$name"
done
