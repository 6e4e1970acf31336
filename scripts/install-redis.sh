#!/usr/bin/env bash
# Makes sure `redis-server` can be run: installs it from the Debian/Ubuntu packages when it
# is missing (needs root or sudo, never prompts), and says what to do elsewhere.
set -euo pipefail

server="${REDFENCE_REDIS_SERVER:-redis-server}"
if command -v "$server" >/dev/null 2>&1; then
  exit 0
fi

if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else
      echo "redis-server is missing and installing it needs root: apt-get install redis-server" >&2
      exit 1
    fi
  fi
  echo "redis-server not found: installing it from the Debian packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq redis-server >/dev/null
  # The package starts a system service on port 6379; the tests never use it.
  command -v redis-server >/dev/null 2>&1 && exit 0
fi

cat >&2 <<'MSG'
redis-server is required by the tests and was not found.
  Debian/Ubuntu: apt-get install redis-server
  Fedora/RHEL:   dnf install redis (or valkey)
  macOS:         brew install redis
Or point REDFENCE_REDIS_SERVER at a redis-server (or valkey-server) binary.
MSG
exit 1
