#!/usr/bin/env bash
# What the `tracing` and `metrics` features cost with no subscriber and no recorder:
# builds benches/observe_cost.rs without and with them, and runs the two against the same
# three nodes in alternating rounds (see the bench's header). Prints p50/p99 and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-redis.sh

# The executable cargo built for the bench, with the given features.
built() {
  cargo bench --locked --no-run --bench observe_cost --features "$1" --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "observe_cost" and m.get("executable"):
        print(m["executable"])'
}
off=$(built testkit)
# Copied aside: the second build may reuse the same output name.
cp "$off" target/observe_cost-off
on=$(built testkit,tracing,metrics)
cp "$on" target/observe_cost-on
REDFENCE_OFF=target/observe_cost-off REDFENCE_ON=target/observe_cost-on target/observe_cost-off
