#!/usr/bin/env bash
# DNS benchmark: dnsperf from a LAN namespace against Gatekeeper, dnsmasq and Unbound (forwarding caches) in one run,
# with knotd as the authoritative upstream in the lab's wan namespace.
# Usage: sudo bench/dns.sh [--seconds 10] [--rate 20000] [--clients 4] [--outstanding 200] [--uncached 1000000]
#                          [--runs cached,rate,uncached] [--servers gatekeeper,dnsmasq,unbound[,unbound2][,floor][,gatekeeper-nocapture]]
#                          [--percentiles on|off] [--attempts 3] [--rounds 1] [--dnsmasq-cache 100000] [--pin off|on|client] [--firewall router|off]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh dnsperf knot knot-dnsutils dnsmasq unbound
cargo build --release --bin gatekeeper --example bench_dns
exec "${CARGO_TARGET_DIR:-target}/release/examples/bench_dns" "$@"
