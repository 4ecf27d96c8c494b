#!/usr/bin/env bash
# The browser files Prism serves itself (GraphiQL and React; Chart.js), pinned by web/package-lock.json.
#
#   scripts/web-assets.sh install PYTHON   `npm ci` in web/ (again only when its lock changed),
#                                          then copy the files prism/web/assets.py names into
#                                          prism/web/static/vendor/ (with PYTHON, the venv's)
#
# Needs Node.js with npm: Debian's is installed when it is missing and this runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  install)
    python="${2:?usage: $0 install PYTHON}"
    if ! command -v npm >/dev/null 2>&1; then
      if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing Node.js and npm (Debian packages) ..." >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
      else
        echo "npm is missing: install Node.js with npm (Debian: apt-get install npm)." >&2
        exit 1
      fi
    fi
    stamp=web/node_modules/.package-lock.json
    if [ ! -f "$stamp" ] || [ web/package-lock.json -nt "$stamp" ] || [ web/package.json -nt "$stamp" ]; then
      # No install scripts: these packages are files to serve, nothing to build.
      npm ci --prefix web --ignore-scripts --no-audit --no-fund --loglevel=error
    fi
    "$python" -m prism.web.assets web/node_modules
    ;;
  *)
    echo "usage: $0 install PYTHON" >&2
    exit 2
    ;;
esac
