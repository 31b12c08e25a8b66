#!/usr/bin/env bash
# The main job: set up, show the drivers, then bring up an IPsec tunnel between two network
# namespaces with two ocfpy daemons and push traffic through it (`ocfpy demo`, needs root).
# Without root: the driver table and a quick backend benchmark instead.
#   bash scripts/demo.sh [ocfpy demo options, e.g. --crypto-backend openssl]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then
    bash scripts/setup.sh --lanes "base net"
else
    bash scripts/setup.sh --no-apt
fi
.venv/bin/ocfpy drivers
if [ "$(id -u)" = 0 ] && .venv/bin/ocfpy demo --help >/dev/null 2>&1; then
    exec .venv/bin/ocfpy demo "$@"
fi
echo "(not root, or no demo: a quick benchmark of the backends instead)"
.venv/bin/ocfpy bench overhead --rounds 3
exec .venv/bin/ocfpy bench crypto --algorithms aes128gcm16,aes256gcm16,chacha20poly1305,aes256,x25519 \
    --sizes 64,1400,16384 --duration 0.1
