#!/usr/bin/env bash
# Makes sure `redis-server` can be run: installs it from the Debian/Ubuntu packages when it
# is missing (as root, or with passwordless sudo; never prompts), and says what to do
# elsewhere. Also installs `faketime` when it can (optional: the chaos suite skews node
# clocks with it, and skips that fault without it).
set -euo pipefail

server="${REDFENCE_REDIS_SERVER:-redis-server}"
have_redis=0
command -v "$server" >/dev/null 2>&1 && have_redis=1
have_faketime=0
for lib in /usr/lib/*-linux-gnu/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1; do
  [ -e "$lib" ] && have_faketime=1
done
if [ "$have_redis" = 1 ] && [ "$have_faketime" = 1 ]; then
  exit 0
fi

sudo=""
can_install=0
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    can_install=1
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
    can_install=1
  fi
fi

if [ "$can_install" = 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  if [ "$have_redis" = 0 ]; then
    echo "redis-server not found: installing it from the Debian packages" >&2
    # The package may start a system service on port 6379; the tests never use it.
    $sudo apt-get install -y -qq redis-server >/dev/null
  fi
  if [ "$have_faketime" = 0 ]; then
    echo "installing faketime (clock-skew faults in the chaos suite)" >&2
    $sudo apt-get install -y -qq faketime >/dev/null ||
      echo "faketime could not be installed: clock-skew faults will be skipped" >&2
  fi
fi

if command -v "$server" >/dev/null 2>&1; then
  exit 0
fi
cat >&2 <<'MSG'
redis-server is required by the tests and was not found (and could not be installed:
that needs apt-get and root or passwordless sudo).
  Debian/Ubuntu: apt-get install redis-server faketime
  Fedora/RHEL:   dnf install redis (or valkey)
  macOS:         brew install redis
Or point REDFENCE_REDIS_SERVER at a redis-server (or valkey-server) binary.
MSG
exit 1
