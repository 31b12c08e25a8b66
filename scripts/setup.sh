#!/usr/bin/env bash
# Idempotent set-up for ocfpy on Debian: system packages (as root), the virtualenv .venv with
# ocfpy and its test extras, and the test-only driver distributions.
#   bash scripts/setup.sh [--lanes "base net interop vm peers"] [--no-apt]
set -euo pipefail
cd "$(dirname "$0")/.."

LANES="base net interop vm peers"
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
# virtio-crypto); peers = the foreign IKE daemons the VM lane's interop rows run against
# (tests/kernel/peers: OpenIKED, charon with kernel-netlink from the interop lane's packages,
# and libreswan, whose package conflicts with strongSwan's: see below).
PKG_base="python3 python3-venv python3-pip python3-dev gcc iproute2 kmod procps systemd"
PKG_base="$PKG_base softhsm2"  # the pkcs11 driver's unit tests use a SoftHSM2 token
PKG_base="$PKG_base zsh"  # tests/unit/test_manpage.py checks the zsh completion parses
PKG_net="iputils-ping tcpdump iperf3 nftables"
PKG_interop="strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins libstrongswan-extra-plugins"
PKG_interop="$PKG_interop strongswan-pki"  # docs/certificates.md makes its CA with `pki`
PKG_vm="qemu-system-x86 linux-image-amd64 busybox-static udev pciutils"
# libreswan's own run-time dependencies (its package is unpacked, not installed, so apt does not
# pull them in): NSS and its certutil, libevent, unbound/ldns, libcap-ng, audit, curl-nss.
PKG_peers="openiked libnss3-tools libnss3 libnspr4 libevent-core-2.1-7 libevent-pthreads-2.1-7 libunbound8 libldns3 libcap-ng0 libaudit1 libcurl3-nss libldap-2.5-0 dns-root-data"
# Debian's libreswan conflicts with strongswan-libcharon/strongswan-starter, so it is unpacked
# (apt-get download + dpkg -x) into this directory; tests/kernel/peers/libreswan.py runs pluto
# from there (OCFPY_LIBRESWAN overrides the path).
LIBRESWAN_DIR=${OCFPY_LIBRESWAN:-/opt/ocfpy-libreswan}

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
    case " $LANES " in *" peers "*)
        if [ ! -x "$LIBRESWAN_DIR/usr/libexec/ipsec/pluto" ]; then
            echo "setup: unpacking libreswan into $LIBRESWAN_DIR"
            dl=$(mktemp -d)
            # _apt cannot write to a root-only mktemp directory: let it (else apt warns and
            # downloads as root).
            chmod 755 "$dl"
            (cd "$dl" && apt-get -o DPkg::Lock::Timeout=600 download libreswan) \
                || { apt-get -o DPkg::Lock::Timeout=600 update -qq \
                     && (cd "$dl" && apt-get -o DPkg::Lock::Timeout=600 download libreswan); }
            mkdir -p "$LIBRESWAN_DIR"
            dpkg -x "$dl"/libreswan_*.deb "$LIBRESWAN_DIR"
            rm -rf "$dl"
        fi
        # The packages' own services must not run: the tests start every daemon themselves.
        if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
            systemctl disable --now openiked.service >/dev/null 2>&1 || true
        fi
        ;;
    esac
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
