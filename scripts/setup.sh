#!/usr/bin/env bash
# Idempotent set-up for ocfpy on Debian: system packages (as root), the virtualenv .venv with
# ocfpy and its test extras, and the test-only driver distributions.
#   bash scripts/setup.sh [--lanes "base net interop vm"] [--no-apt]
set -euo pipefail
cd "$(dirname "$0")/.."

LANES="base net interop vm"
APT=1
while [ $# -gt 0 ]; do
    case "$1" in
        --lanes) LANES="$2"; shift 2 ;;
        --no-apt) APT=0; shift ;;
        *) echo "setup.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

# Debian packages per lane (lanes.md): base = build + run (systemd: systemd-analyze verify of
# the unit file); net = namespaces, TUN, captures,
# iperf3; interop = strongSwan as the peer; vm = a stock kernel under QEMU (AF_ALG, XFRM ESP,
# virtio-crypto).
PKG_base="python3 python3-venv python3-pip python3-dev gcc iproute2 kmod procps systemd"
PKG_base="$PKG_base softhsm2"  # the pkcs11 driver's unit tests use a SoftHSM2 token
PKG_base="$PKG_base zsh"  # tests/unit/test_manpage.py checks the zsh completion parses
PKG_net="iputils-ping tcpdump iperf3 nftables"
PKG_interop="strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins libstrongswan-extra-plugins"
PKG_interop="$PKG_interop strongswan-pki"  # docs/certificates.md makes its CA with `pki`
PKG_vm="qemu-system-x86 linux-image-amd64 busybox-static udev pciutils"

if [ "$APT" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    want=""
    for lane in $LANES; do v="PKG_$lane"; want="$want ${!v:-}"; done
    missing=""
    for p in $want; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "setup: installing Debian packages:$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        # strongSwan's maintainer scripts try to start charon; nothing must run before our tests.
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $missing
        rm -f /usr/sbin/policy-rc.d
    fi
elif [ "$APT" = 1 ] && [ "$(id -u)" != 0 ]; then
    echo "setup: not root: skipping Debian packages (lanes that need them will be skipped with a reason)"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
.venv/bin/python -m pip install -q -e '.[test]'
# Test-only drivers (tests/fixtures/ocfpy-testdrivers: drivers that fail on purpose) go
# into .testdrivers/, which tests/conftest.py puts on sys.path: their entry points are real,
# but a user's `ocfpy drivers` and `ocfpy demo` never see them.
.venv/bin/python -m pip uninstall -q -y ocfpy-testdrivers ocfpy-example-driver \
    ocfpy-broken-driver ocfpy-faulty-driver >/dev/null 2>&1 || true
rm -rf .testdrivers
.venv/bin/python -m pip install -q --no-deps --target .testdrivers tests/fixtures/ocfpy-testdrivers
echo "setup: ready (.venv/bin/ocfpy)"
