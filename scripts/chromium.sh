#!/usr/bin/env bash
# Make sure Debian's chromium is installed: the browser tests (tests/test_browser.py) drive it
# headless through Playwright, which never downloads a browser of its own here.
#
#   scripts/chromium.sh ensure    install Debian's chromium if it is missing (needs root)
set -euo pipefail

case "${1:-ensure}" in
  ensure)
    if command -v chromium >/dev/null 2>&1; then
      exit 0
    fi
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "Installing chromium (Debian package) ..." >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends chromium >/dev/null
      exit 0
    fi
    echo "chromium is missing: install it (Debian: apt-get install chromium)." >&2
    echo "Without it the browser tests skip locally and fail in CI." >&2
    ;;
  *)
    echo "usage: $0 ensure" >&2
    exit 2
    ;;
esac
