#!/usr/bin/env bash
# The GPU machine's check (issue 20), one script for its short lease: offline set-up, the GPU tests, then
# `lmpipe bench node` for fsdp and zero2, each eager and compiled, ending with rows for bench/RESULTS.md's
# GPU section (device, date, commit, command). Sized for under 8 minutes on one H100/H200: the four bench
# runs are estimated at ~5.5 (30 s timed each, plus start-up, the 1.3b build and compilation), the GPU
# tests' own time adds to that; not yet run on a GPU.
#
#   bash bench/gpu_check.sh          # on the GPU machine, from anywhere in the checkout
#   bash bench/gpu_check.sh --cpu    # rehearsal on a CPU: no set-up or GPU tests; tiny model, gloo, fp32,
#                                    # fsdp and zero2 for a second each (compile left out: its C++ build
#                                    # added ~40 s on the 2-core development machine)
#
# Set-up: with a wheelhouse (WHEELS=dir, default ./wheels when it exists; `make wheelhouse` makes one),
# `make setup WHEELS=dir` (a .venv over the image's own CUDA torch, pip offline); else an existing .venv;
# else PYTHON (default python3), which must then have lmpipe's dependencies.
# Environment: GPU_CHECK_OUT (the reports, log and results.md; default $OUT, the device tool's folder
# that comes back, else runs/gpu_check), BENCH_SECONDS (timed seconds per run; 30, --cpu 1),
# BENCH_SIZE (1.3b, --cpu tiny), PYTHON.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cpu=0
case "${1:-}" in
    --cpu) cpu=1 ;;
    "") ;;
    *) echo "usage: bash bench/gpu_check.sh [--cpu]" >&2; exit 2 ;;
esac

out=${GPU_CHECK_OUT:-${OUT:-runs/gpu_check}}
mkdir -p "$out"
exec > >(tee -a "$out/gpu_check.log") 2>&1  # everything below is also kept with the reports
started=$SECONDS
failed=0
echo "== gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L || true; fi

# --- set-up -------------------------------------------------------------------------------------------
wheels=${WHEELS:-wheels}
if [[ -n ${WHEELS:-} && ! -d $WHEELS ]]; then
    echo "gpu_check: WHEELS=$WHEELS is not a directory" >&2
    exit 2
fi
if ((cpu)); then
    python=${PYTHON:-.venv/bin/python}
elif [[ -d $wheels ]]; then
    make setup WHEELS="$wheels"
    python=.venv/bin/python
elif [[ -x .venv/bin/python ]]; then
    python=.venv/bin/python
else
    python=${PYTHON:-python3}
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, whatever the venv installed
"$python" -c "import torch; print('python', torch.__file__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# --- GPU tests ----------------------------------------------------------------------------------------
if ((cpu)); then
    tests="not run (--cpu)"
else
    # Only the files that hold GPU tests: collecting the whole suite would import what this machine lacks
    # (MLflow, datasets, the WARC readers) and stop on those errors before any GPU test ran.
    mapfile -t gpu_files < <(grep -rlE 'mark\.gpu|GPU_MARKS' tests --include='test_*.py' | sort)
    echo "== pytest -m gpu -x (${#gpu_files[@]} files)"
    rc=0
    if ((${#gpu_files[@]})); then
        "$python" -m pytest -m gpu -x -q -p no:cacheprovider "${gpu_files[@]}" || rc=$?
    else
        rc=5
    fi
    case $rc in
        0) tests="passed (skips, if any, listed above)" ;;
        5) tests="none collected" ;;  # pytest's exit code when no test has the marker
        *) tests="FAILED (pytest exit $rc)"; failed=1 ;;
    esac
fi

# --- bench node ---------------------------------------------------------------------------------------
if ((cpu)); then
    seconds=${BENCH_SECONDS:-1} size=${BENCH_SIZE:-tiny} runs=("fsdp" "zero2")
else
    seconds=${BENCH_SECONDS:-30} size=${BENCH_SIZE:-1.3b} runs=("fsdp" "fsdp --compile" "zero2" "zero2 --compile")
fi
reports=()
for run in "${runs[@]}"; do
    read -ra options <<<"$run"
    report="$out/bench-${run// --/-}.json"  # bench-fsdp.json, bench-fsdp-compile.json, bench-zero2.json, ...
    echo "== lmpipe bench node --size $size --seconds $seconds --strategy $run"
    if "$python" -m pipeline.cli bench node --size "$size" --seconds "$seconds" --strategy "${options[@]}" \
        --json "$report"; then
        reports+=("$report")
    else
        echo "gpu_check: bench node --strategy $run FAILED" >&2
        failed=1
    fi
done

# --- rows for bench/RESULTS.md ------------------------------------------------------------------------
if ((${#reports[@]})); then
    echo "== for bench/RESULTS.md (GPU figures, newest first)"
    "$python" -m pipeline.cli bench table "${reports[@]}" | tee "$out/results.md"
fi
echo "== gpu_check done in $((SECONDS - started)) s: GPU tests $tests; ${#reports[@]}/${#runs[@]} bench runs; in $out"
exit "$failed"
