#!/usr/bin/env bash
# Installs the peers and load tools, builds Shoal, and runs the comparison (bench/run.py).
# Usage: bench/run.sh [--rounds N] [--duration SECONDS] [--servers a,b,c] [--idle N]
# Sends traffic only to 127.0.0.1. Takes about 35 minutes with the defaults on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null || ! command -v varnishd >/dev/null || ! command -v traffic_server >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx varnish haproxy trafficserver wrk python3 >/dev/null
fi
cargo build --release --bin shoal
ulimit -n "$(ulimit -Hn)"
exec python3 bench/run.py "$@"
