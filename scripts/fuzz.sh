#!/usr/bin/env bash
# Coverage-guided fuzzing (atheris / libFuzzer) of what an outsider controls: IKE datagrams,
# SK payloads, ESP packets, the config file, the control socket. Targets: tests/fuzz/harnesses.py.
#
#   bash scripts/fuzz.sh TARGET [--time S] [--runs N]   one target, for longer local runs
#                                                       (default: 300 s)
#   bash scripts/fuzz.sh --ci                           every target, the CI budget below
#   bash scripts/fuzz.sh --list
#
# Prints `fuzz: TARGET N executions, M crashes` per target (and the total with --ci). A crash
# leaves its input in results/fuzz/TARGET-crash-<sha1> and the run's log in
# results/fuzz/TARGET.log, and fails the run (exit 1). Replay one input:
#   .venv/bin/python -m tests.fuzz.run TARGET results/fuzz/TARGET-crash-...
# and add it to tests/fuzz/regressions/TARGET/ (tests/fuzz/test_regressions.py replays those).
# New inputs libFuzzer finds go to results/fuzz/corpus/TARGET, never into the committed seeds
# (tests/fuzz/corpus/TARGET); copy the useful ones over by hand.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=results/fuzz

# The CI budget per target: executions (rates measured on the 2-core CI machine, see
# docs/security.md) and a time limit, so that one CI run makes >= 1,000,000 executions in about
# 3 minutes. The parsers are fast and get a number of runs; the two engine targets are slow (a
# live IKE SA is rebuilt after every input that changed it) and get a time slice instead
# (runs 0). FUZZ_CAP_S caps a run-bound target on a much slower machine.
CI_TARGETS=(
    "ike_decode 330000 0"
    "ike_sk 20000 0"
    "ike_responder 0 20"
    "ike_initiator 0 20"
    "esp_decap 440000 0"
    "esp_framing 60000 0"
    "config_load 20000 0"
    "control_line 260000 0"
    "peer_auth 20000 0"
    "fragments 10000 0"
    "offload 5000 0"
)
CI_CAP_S=${FUZZ_CAP_S:-90}
MIN_EXECS=${FUZZ_MIN_EXECS:-1000000}

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

# run_target NAME RUNS SECONDS -> prints the summary line; sets EXECS, CRASHES
run_target() {
    local name=$1 runs=$2 secs=$3
    mkdir -p "$OUT/corpus/$name"
    rm -f "$OUT/$name"-crash-* "$OUT/$name"-timeout-* "$OUT/$name"-oom-*
    local log="$OUT/$name.log"
    local args=(-print_final_stats=1 -timeout=10 -rss_limit_mb=2048
                "-artifact_prefix=$OUT/$name-")
    [ "$runs" -gt 0 ] && args+=("-runs=$runs")
    [ "$secs" -gt 0 ] && args+=("-max_total_time=$secs")
    local t0=$SECONDS
    "$PY" -m tests.fuzz.run "$name" "${args[@]}" "$OUT/corpus/$name" "tests/fuzz/corpus/$name" \
        >"$log" 2>&1
    local rc=$?
    EXECS=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    if [ -z "$EXECS" ]; then  # a crash ends the run before the final stats: the last status line
        EXECS=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    fi
    EXECS=${EXECS:-0}
    CRASHES=$(find "$OUT" -maxdepth 1 \( -name "$name-crash-*" -o -name "$name-timeout-*" \
              -o -name "$name-oom-*" \) | wc -l)
    if [ "$rc" -ne 0 ] && [ "$CRASHES" -eq 0 ]; then
        CRASHES=1  # died without an artifact (import error, harness set-up): still a failure
        echo "fuzz: $name: exited $rc without an artifact; see $log" >&2
    fi
    local dt=$((SECONDS - t0))
    echo "fuzz: $name $EXECS executions, $CRASHES crashes ($dt s, $((EXECS / (dt > 0 ? dt : 1))) exec/s)"
    if [ "$CRASHES" -gt 0 ]; then
        ls "$OUT/$name"-crash-* "$OUT/$name"-timeout-* "$OUT/$name"-oom-* 2>/dev/null | sed 's/^/  reproducer: /'
        grep -A12 -m1 -E 'Uncaught Python exception|Traceback' "$log" | sed 's/^/  /'
    fi
}

[ $# -ge 1 ] || usage
"$PY" -c "import atheris" 2>/dev/null || {
    echo "fuzz: atheris is not installed in .venv (pip install -e '.[test]')" >&2; exit 1; }
mkdir -p "$OUT"

case "$1" in
    -h|--help) usage ;;
    --list) "$PY" -c "from tests.fuzz.harnesses import TARGETS; print('\n'.join(TARGETS))"; exit 0 ;;
    --ci)
        total=0; crashes=0; t0=$SECONDS
        for entry in "${CI_TARGETS[@]}"; do
            set -- $entry
            run_target "$1" "$2" "$([ "$3" -gt 0 ] && echo "$3" || echo "$CI_CAP_S")"
            total=$((total + EXECS)); crashes=$((crashes + CRASHES))
        done
        echo "fuzz: total $total executions, $crashes crashes ($((SECONDS - t0)) s)"
        status=0
        [ "$crashes" -gt 0 ] && status=1
        if [ "$total" -lt "$MIN_EXECS" ]; then
            echo "fuzz: fewer than $MIN_EXECS executions (a slow or loaded machine hit the cap)" >&2
            [ "${CI:-}" = "true" ] && status=1
        fi
        exit $status ;;
esac

name=$1; shift
secs=300; runs=0
while [ $# -gt 0 ]; do
    case "$1" in
        --time) secs=$2; shift 2 ;;
        --runs) runs=$2; secs=0; shift 2 ;;
        *) usage ;;
    esac
done
run_target "$name" "$runs" "$secs"
[ "$CRASHES" -eq 0 ]
