#!/usr/bin/env bash
# Installs the Debian packages the lab and the tests use (only the missing ones), and checks for cargo.
# Usage: scripts/deps.sh [extra packages...]
set -euo pipefail

packages=(
  iproute2 iputils-ping procps       # namespaces, veths, ping, sysctl
  isc-dhcp-client udhcpc dhcpcd-base # real DHCP clients for the end-to-end tests
  kea-admin                          # perfdhcp (relay-mode DHCP test)
  tcpdump curl iptables nftables     # captures, HTTP checks, NFQUEUE rules, the kernel-NAT comparison
  knot knot-dnsutils bind9-dnsutils  # the upstream DNS server (knotd) and real DNS clients (kdig, dig)
  coturn traceroute netcat-openbsd   # RFC 5780 NAT behaviour (turnutils_natdiscovery), ICMP errors, raw TCP
  iperf3                             # bulk TCP through the NAT (GSO packets, partial checksums)
  chromium fonts-dejavu-core         # the browser tests (headless, driven by Playwright: web/test/driver.mjs)
  tshark                             # reads the capture downloads back (tshark, capinfos)
  natpmpc                            # a NAT-PMP client (the ports tests)
  miniupnpc                          # a UPnP IGD client, upnpc (the ports tests)
  prometheus                         # promtool checks /metrics (the metrics test)
  systemd                            # systemd-analyze verifies the unit (the install test)
  "$@"
)
# The web UI's build needs Node.js and npm; a machine with its own Node.js keeps it.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing: ${missing[*]}"
  apt-get update -q
  # Packages with a service (knot, prometheus, coturn) must not start it on this machine: the tests start what
  # they need inside their own namespaces. A policy-rc.d that refuses is Debian's way to say so.
  policy=/usr/sbin/policy-rc.d
  made_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  [ -z "$made_policy" ] || rm -f "$policy"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install a Rust toolchain (https://rustup.rs), then run this again." >&2
  exit 1
fi
