#!/usr/bin/env bash
# The test command: set up, then run every lane this machine can run, each skipped lane
# reported with its reason. As root on Debian it installs what the lanes need.
#   bash scripts/test.sh [extra pytest args]
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "test.sh: set-up failed" >&2; exit 1; }

mkdir -p results
rm -f results/*.xml
status=0

echo "=== host lanes: unit, net (root + namespaces), interop (strongSwan) ==="
host_t0=$SECONDS
.venv/bin/python -m pytest -m "not kernel and not virtio" --junitxml=results/host.xml "$@"
rc=$?
echo "timing: host lanes $((SECONDS - host_t0)) s"
[ $rc -eq 5 ] && rc=0   # no tests collected is not a failure of the lanes that ran
[ $rc -ne 0 ] && status=$rc

echo "=== fuzz: every atheris target for its CI budget (scripts/fuzz.sh --ci) ==="
# A crash fails the run; its input stays in results/fuzz/ (see scripts/fuzz.sh).
fuzz_t0=$SECONDS
bash scripts/fuzz.sh --ci
rc=$?
echo "timing: fuzz stage $((SECONDS - fuzz_t0)) s"
[ $rc -ne 0 ] && status=$rc

echo "=== VM lane: a stock kernel under QEMU (AF_ALG, XFRM ESP, virtio-crypto) ==="
if [ -x scripts/vm-lane.sh ] || [ -f scripts/vm-lane.sh ]; then
    vm_t0=$SECONDS
    bash scripts/vm-lane.sh --junitxml results/vm.xml "$@"
    rc=$?
    echo "timing: VM lane $((SECONDS - vm_t0)) s"
    if [ $rc -eq 77 ]; then
        echo "VM lane skipped (reason above)"
        [ "${CI:-}" = "true" ] && { echo "CI must run the VM lane: failing" >&2; status=1; }
    elif [ $rc -ne 0 ] && [ $rc -ne 5 ]; then
        status=$rc
    fi
else
    echo "VM lane skipped: scripts/vm-lane.sh is not present"
fi

echo "=== floors lane: the unit tier on the lowest dependency versions pyproject allows ==="
# A fresh venv (minutes): in CI always, elsewhere with OCFPY_FLOORS=1.
if [ "${CI:-}" = "true" ] || [ "${OCFPY_FLOORS:-}" = "1" ]; then
    floors_t0=$SECONDS
    bash scripts/test-floors.sh tests/unit tests/kat --junitxml=results/floors.xml
    rc=$?
    echo "timing: floors lane $((SECONDS - floors_t0)) s"
    [ $rc -ne 0 ] && status=$rc
else
    echo "floors lane skipped: not CI (OCFPY_FLOORS=1 runs it)"
fi

.venv/bin/python scripts/summarize-junit.py results/*.xml
exit $status
