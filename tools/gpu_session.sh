#!/usr/bin/env bash
# One GPU session's work in one command (docs/gpu.md, "The prepared device script"):
#   1. reassemble and unpack the wheels carried into .whl/ (parts NAME.whl.part-aa, -ab, ... -> NAME.whl);
#   2. say what the machine has: GPU, driver, Python, torch, DALI, the other imports the check needs, and
#      the size of /dev/shm (df -h), where the reference loader's workers hand batches over;
#   3. run tools/gpu_check.py --budget $BUDGET (default 400) under our own time limit, whose SIGTERM makes it
#      write its report and stop before any outer limit kills it outright; then the LRN benchmark;
#   4. copy gpu_check/ (without its generated shards and checkpoints) and this session's log into $OUT.
#
#   bash tools/gpu_session.sh              # everything, with python3 as it is (no network needed)
#   bash tools/gpu_session.sh preflight    # steps 1, 2 and 4 only: what is there, what is missing
#   BUDGET=480 PYTHON=python3.11 bash tools/gpu_session.sh
#   CHECK_ARGS="--device cpu --quick" LRN_ARGS="--device cpu" bash tools/gpu_session.sh   # a CPU rehearsal
#
# Exit status: gpu_check's (0 all sections ok, 1 not, 143 stopped by the time limit), 3 if the imports it
# needs are missing.
set -u
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-python3}
BUDGET=${BUDGET:-400}
LIMIT=${LIMIT:-$((BUDGET + 40))}   # gpu_check's sections end by BUDGET; this is the backstop
OUT=${OUT:-$REPO/gpu_session_out}
WHEELS=${WHEELS:-.whl}
CHECK_ARGS=${CHECK_ARGS:-}
LRN_ARGS=${LRN_ARGS:---device cuda --batch-size 256}
mkdir -p "$OUT"
LOG="$OUT/session.log"
say() { echo "gpu_session: $*" | tee -a "$LOG"; }

copy_out() {  # what comes back: the report, the logs; not the shards (hard links, 25 copies) nor checkpoints
    [ -d gpu_check ] || return 0
    "$PY" - "$OUT/gpu_check" <<'EOF'
import shutil, sys
shutil.copytree("gpu_check", sys.argv[1], dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("data", "data-quick", "*.pt", "events.out.tfevents.*"))
EOF
    say "copied gpu_check/ (report, logs) into $OUT"
}
trap copy_out EXIT

unpack_wheels() {
    [ -d "$WHEELS" ] || { say "no $WHEELS/ folder: nothing carried"; return; }
    for first in "$WHEELS"/*.part-aa; do
        [ -e "$first" ] || continue
        whl=${first%.part-aa}
        cat "$whl".part-* > "$whl.tmp" && mv "$whl.tmp" "$whl" && say "reassembled $whl ($(du -h "$whl" | cut -f1))"
    done
    ls "$WHEELS"/*.whl >/dev/null 2>&1 || { say "no wheels in $WHEELS/"; return; }
    local names
    names=$(cd "$WHEELS" && ls -- *.whl | tr '\n' ' ')
    if "$PY" -m pip --version >/dev/null 2>&1 &&
        "$PY" -m pip install --quiet --no-index --no-deps "$WHEELS"/*.whl >>"$LOG" 2>&1; then
        say "installed with pip: $names"
    else  # no pip, or a read-only site-packages: unpack beside the repository instead
        mkdir -p "$WHEELS/site"
        for whl in "$WHEELS"/*.whl; do "$PY" -m zipfile -e "$whl" "$WHEELS/site/" || say "could not unpack $whl"; done
        export PYTHONPATH="$(cd "$WHEELS/site" && pwd)${PYTHONPATH:+:$PYTHONPATH}"
        say "pip could not install them: unpacked into $WHEELS/site (on PYTHONPATH): $names"
    fi
}

preflight() {
    say "machine: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
    say "cores (affinity): $(nproc), $("$PY" --version 2>&1)"
    df -h /dev/shm 2>&1 | tee -a "$LOG" "$OUT/shm.txt"
    "$PY" - <<'EOF' 2>&1 | tee -a "$LOG" "$OUT/preflight.txt"
import importlib
missing = []
for name in ("torch", "nvidia.dali", "numpy", "PIL", "cv2", "click", "tqdm", "webdataset", "matplotlib",
             "tensorboard", "pytest"):
    try:
        m = importlib.import_module(name)
        print(f"  {name:12} {getattr(m, '__version__', 'ok')}")
    except Exception as e:
        print(f"  {name:12} MISSING ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
        missing.append(name)
try:
    import torch
    print(f"  torch CUDA {torch.version.cuda}, available {torch.cuda.is_available()}, "
          f"devices {torch.cuda.device_count()}")
except Exception:
    pass
print("preflight: " + ("all imports there" if not [m for m in missing if m != "pytest"]
                       else "MISSING " + " ".join(missing) + ": carry their wheels (docs/gpu.md)"))
EOF
}

unpack_wheels
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
preflight
grep -q "MISSING" "$OUT/preflight.txt" && ! grep -q "preflight: all imports there" "$OUT/preflight.txt" && {
    say "the check needs the imports marked MISSING above"; exit 3; }
[ "${1:-}" = preflight ] && exit 0

say "gpu_check --budget $BUDGET under a ${LIMIT} s limit"
# shellcheck disable=SC2086  # the ARGS are word lists
timeout --signal=TERM --kill-after=30 "$LIMIT" "$PY" tools/gpu_check.py --out gpu_check --budget "$BUDGET" \
    $CHECK_ARGS > >(tee "$OUT/gpu_check.log") 2>&1
status=$?
say "gpu_check exit status $status"
# shellcheck disable=SC2086
timeout 45 "$PY" tools/bench_lrn.py $LRN_ARGS --json gpu_check/lrn.json >>"$LOG" 2>&1 \
    || say "LRN benchmark did not finish (exit $?)"
exit $status
