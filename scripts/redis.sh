#!/usr/bin/env bash
# Make sure a redis-server binary is installed (tests start their own instances of it).
#
#   scripts/redis.sh ensure    install Debian's redis-server if it is missing (needs root)
#
# The Debian package may try to start a system service; nothing depends on it (the tests
# run redis-server on free ports of their own, without persistence).
set -euo pipefail

case "${1:-ensure}" in
  ensure)
    if command -v redis-server >/dev/null 2>&1; then
      exit 0
    fi
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "Installing redis-server (Debian package) ..." >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends redis-server >/dev/null
      # A container has no init: stop a server the package may have started anyway.
      (command -v service >/dev/null 2>&1 && service redis-server stop) >/dev/null 2>&1 || true
      exit 0
    fi
    echo "redis-server is missing: install it (Debian: apt-get install redis-server)." >&2
    echo "Without it the Redis tests skip locally and fail in CI." >&2
    ;;
  *)
    echo "usage: $0 ensure" >&2
    exit 2
    ;;
esac
