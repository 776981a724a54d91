#!/usr/bin/env bash
# Builds the web UI (web/ -> web/dist, embedded in the binary by build.rs): npm ci from the lock file, then the
# type check and the bundle. Skips both when the build is newer than every source.
set -euo pipefail
cd "$(dirname "$0")/../web"
if ! command -v npm >/dev/null 2>&1; then
  echo "npm is not installed (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
if [ -f dist/index.html ] && [ -z "$(find src index.html build.mjs package-lock.json -newer dist/index.html | head -1)" ]; then
  exit 0
fi
npm run build
