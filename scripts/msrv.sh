#!/usr/bin/env bash
# Keeps `rust-version` honest: fails when a package in Cargo.lock declares a newer
# minimum Rust than the crate does. (Clippy's incompatible_msrv lint, on in
# scripts/lint.sh, checks our own use of the standard library against it.)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --locked | python3 -c '
import json, sys
meta = json.load(sys.stdin)
def version(v):
    parts = [int(x) for x in v.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))
ours = next(p for p in meta["packages"] if p["name"] == "redfence")
declared = ours.get("rust_version")
if not declared:
    sys.exit("Cargo.toml declares no rust-version")
newer = sorted(
    ((p["rust_version"], p["name"], p["version"]) for p in meta["packages"]
     if p.get("rust_version") and version(p["rust_version"]) > version(declared)),
    key=lambda r: version(r[0]), reverse=True)
for need, name, v in newer:
    print(f"{name} {v} needs Rust {need}, above rust-version {declared}", file=sys.stderr)
if newer:
    sys.exit(f"raise rust-version in Cargo.toml to {newer[0][0]} (or pin older packages)")
print(f"rust-version {declared} covers every package in Cargo.lock")
'
