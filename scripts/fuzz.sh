#!/usr/bin/env bash
# Runs fuzz targets without cargo-fuzz: builds them with libFuzzer's instrumentation (the flags cargo-fuzz passes)
# on nightly, then runs each for SECONDS with a corpus in $CORPUS_DIR (default /tmp/gatekeeper-corpus).
# Usage: scripts/fuzz.sh SECONDS target...   e.g. scripts/fuzz.sh 90 pmp_handle upnp_soap upnp_ssdp
set -euo pipefail
secs=${1:?seconds}; shift
[ $# -gt 0 ] || { echo "name at least one target (see fuzz/Cargo.toml)" >&2; exit 2; }
cd "$(dirname "$0")/../fuzz"
target=${CARGO_TARGET_DIR:-target}
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target keeps the instrumentation off build scripts and proc macros.
cargo +nightly build --release --target "$triple" $(printf -- '--bin %s ' "$@")
for t in "$@"; do
  corpus=${CORPUS_DIR:-/tmp/gatekeeper-corpus}/$t
  mkdir -p "$corpus"
  "$target/$triple/release/$t" -max_total_time="$secs" -rss_limit_mb=2048 "$corpus" 2>&1 | grep -E "^Done|ERROR|panicked" || true
done
