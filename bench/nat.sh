#!/usr/bin/env bash
# NAT benchmark: iperf3 (TCP 1 and 4 streams, UDP 64-byte packets) from a LAN namespace to the lab's internet through
# plain kernel forwarding, the kernel's nft masquerade and Gatekeeper, each in a fresh lab, in one run; CPU per
# Gbit/s and per Mpps; checksum errors and untranslated packets on the WAN checked (non-zero exit if Gatekeeper has any).
# Usage: sudo bench/nat.sh [--seconds 10] [--tests tcp1,tcp4,udp64] [--setups plain,masquerade,gatekeeper]
#                          [--attempts 3] [--queues N]
#        sudo bench/nat.sh --mode api [--rounds 5] [--seconds 10] [--gatekeeper PATH]
#        (GET /api/nat latency idle and under a TCP stream; the stream alone and with /api/nat read back to back)
# --queues N is passed to Gatekeeper as --nat-queues N if its `run --help` lists that flag, and as the environment
# variable GATEKEEPER_NAT_QUEUES=N in any case.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh iperf3 tcpdump nftables iproute2 iputils-ping
cargo build --release --bin gatekeeper --example bench_nat
exec "${CARGO_TARGET_DIR:-target}/release/examples/bench_nat" "$@"
