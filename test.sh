#!/usr/bin/env bash
# Runs the whole test suite: unit tests and end-to-end tests in network namespaces (needs root).
# Afterwards checks that no namespace of ours is left behind.
set -euo pipefail
cd "$(dirname "$0")"
[ "$(id -u)" = 0 ] || { echo "run as root: sudo ./test.sh" >&2; exit 1; }
scripts/deps.sh
scripts/web.sh
status=0
cargo test --all-targets "$@" || status=$?
left=$(ip netns list | awk '{print $1}' | grep '^gk-' || true)
if [ -n "$left" ]; then
  echo "FAIL: the tests left network namespaces behind: $left" >&2
  status=1
fi
exit $status
