#!/usr/bin/env bash
# Builds Gatekeeper and starts the lab: a virtual home network in network namespaces with simulated devices and
# the gateway. Needs root. Ctrl-C stops it and removes everything.
set -euo pipefail
cd "$(dirname "$0")"
[ "$(id -u)" = 0 ] || { echo "run as root: sudo ./lab.sh" >&2; exit 1; }
scripts/deps.sh
scripts/web.sh
cargo build --release
exec target/release/gatekeeper lab "$@"
