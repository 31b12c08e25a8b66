#!/usr/bin/env bash
# The rekey soak (issue 18) for as long as asked: ocfpy against ocfpy and against charon,
# CHILD_SA rekeys every 2.5 s and IKE SA rekeys every 10 s (PFS), 50 pings/s and a TCP
# stream, asserting zero loss. CI runs the same tests for 100 s each (the host lanes).
#   bash scripts/soak.sh --minutes N [--peer ocfpy|charon|both] [--record DIR] [--memtrace DIR]
# --record DIR: the memory samples as JSON (python -m ocfpy.lab.soak DIR/soak-*.json --window S)
# --memtrace DIR: ocfpy's tracemalloc records (ocfpy/iked/memtrace.py; slows the dataplane)
# Root and the lab's tools needed; holds the shared root-lane lock like every net run.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=2
peer=both
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --peer) peer="$2"; shift 2 ;;
        --record) export OCFPY_SOAK_RECORD="$2"; shift 2 ;;
        --memtrace) export OCFPY_MEMTRACE="$2"; shift 2 ;;
        -h|--help) sed -n 2,8p "$0"; exit 0 ;;
        *) echo "soak.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$minutes" in ''|*[!0-9.]*) echo "soak.sh: --minutes wants a number" >&2; exit 2 ;; esac
tests=()
case "$peer" in
    ocfpy) tests=(tests/net/test_rekey_soak.py) ;;
    charon) tests=(tests/interop/test_rekey_soak_charon.py) ;;
    both) tests=(tests/net/test_rekey_soak.py tests/interop/test_rekey_soak_charon.py) ;;
    *) echo "soak.sh: --peer is ocfpy, charon or both" >&2; exit 2 ;;
esac
seconds=$(python3 -c "print(int(float('$minutes') * 60))")
echo "soak: ${seconds} s per peer kind: ${tests[*]}"
OCFPY_SOAK_SECONDS=$seconds exec flock /tmp/ocfpy-root-lane.lock \
    .venv/bin/python -m pytest -m soak -s -q -p no:cacheprovider "${tests[@]}"
