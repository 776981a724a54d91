#!/usr/bin/env bash
# DHCP benchmark: perfdhcp (relay mode, a new client per exchange) against Gatekeeper, Kea and dnsmasq in one run.
# Usage: sudo bench/dhcp.sh [--seconds N] [--rates 5000,12000] [--held 0,10000] [--servers gatekeeper,kea,dnsmasq]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh kea-admin kea-dhcp4-server dnsmasq
cargo build --release --bin gatekeeper --example bench_dhcp
exec target/release/examples/bench_dhcp "$@"
