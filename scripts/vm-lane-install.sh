#!/bin/sh
# Installs what the kernel VM lane needs (root; Debian 12): QEMU, a stock kernel and its
# modules, busybox for virtme-ng's init, and virtme-ng 1.42 in its own venv under .vm/.
# About 65 s and 500 MB. Safe to re-run.
set -eu
cd "$(dirname "$0")/.."
apt-get -o DPkg::Lock::Timeout=600 update
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y \
  --no-install-recommends qemu-system-x86 linux-image-amd64 busybox-static kmod udev \
  iproute2 iputils-ping pciutils
[ -x .vm/vng/bin/vng ] || { python3 -m venv .vm/vng && .vm/vng/bin/pip install -q virtme-ng==1.42; }
[ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'; }
echo "vm-lane prerequisites installed; run scripts/vm-lane.sh"
