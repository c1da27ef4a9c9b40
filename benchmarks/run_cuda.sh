#!/usr/bin/env bash
# CUDA benchmarks and tests in one prepared script; writes benchmarks/results/<device>.json (at most
# 12 minutes, the budgets below; MXA_CUDA_COMPILE=1 adds torch.compile: up to 12 minutes more).
# Usage: bash benchmarks/run_cuda.sh   (needs a CUDA device; runs from the source tree, no install: torch, timm,
#        pytest-benchmark and, for the tests, the test extra's packages where present)
# Each step has a time budget (seconds, scaled by MXA_CUDA_BUDGET, default 1.0) and runs in priority order: a
# step cut off by its budget is reported and the others still run, so a short lease returns what it could
# measure. MXA_CUDA_WORK=DIR keeps every step's own JSON and log there (default: a temporary folder).
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-$(command -v python3 || command -v python)}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
"$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')" || exit 1
dev=$("$py" -c "import torch, re; print(re.sub(r'[^A-Za-z0-9]+', '-', torch.cuda.get_device_name(0)).strip('-').lower())")
out=benchmarks/results
work=${MXA_CUDA_WORK:-$(mktemp -d)}
mkdir -p "$work"
# a step that fails leaves the file of an earlier run in place, which would be merged and copied as new
if [[ -n $(ls -A "$work") ]]; then echo "error: $work is not empty: give MXA_CUDA_WORK a new folder" >&2; exit 1; fi
scale=${MXA_CUDA_BUDGET:-1.0}
# step NAME SECONDS ARGS...: run `python ARGS` under its budget, its output in $work/NAME.log
step() {
    local name=$1 secs budget rc
    secs=$2
    shift 2
    budget=$("$py" -c "print(max(1, round($secs * $scale)))")
    echo "== $name (budget ${budget} s)"
    timeout --kill-after=10 "$budget" "$py" "$@" >"$work/$name.log" 2>&1
    rc=$?
    tail -n 25 "$work/$name.log"
    case $rc in 0) echo "== $name: done" ;; 124 | 137) echo "== $name: CUT OFF at ${budget} s" ;; *) echo "== $name: failed (exit $rc)" ;; esac
}
bench() { local name=$1 secs=$2; shift 2; step "$name" "$secs" -m mxa bench "$@" --json "$work/$name.json"; }
m5=(--model efficientvit_ml_m5)
others=(); for i in 0 1 2 3 4; do others+=(--model "efficientvit_ml_m$i"); done
# 1. correctness first: the CUDA variants of the op matrix (float64 oracle, bf16, autocast, deterministic,
#    compile, CUDA-graph capture) and of the layers (112 tests, 22 s on an H200)
step tests 60 -m pytest tests/test_cbam_mxa_block.py tests/test_op_matrix.py tests/test_roi.py \
    tests/test_separable.py -q -k cuda -n 4 -p no:cacheprovider
# 2. MXA / baseline on M5, eager and deterministic, at batch 1 and 32 (where kernel launches dominate; issues
#    23, 34), then the EfficientViT paper's setting (batch 1024, bf16 autocast); operators per block come with
#    each (about 30-45 s each on an H200)
bench m5-b1 60 "${m5[@]}" --runtime eager --runtime deterministic --device cuda --batch-size 1 --repeats 50 \
    --no-train
bench m5-b32 60 "${m5[@]}" --runtime eager --runtime deterministic --device cuda --batch-size 32 --repeats 20
# MXA with the kernel launches taken out: eager and each forward replayed as a CUDA graph (about 20 s; with
# MXA_CUDA_COMPILE=1 also compiled, and compiled and replayed: about 5 minutes on an H200; issue 34)
launch=(--batch-size 1 --batch-size 32 --json "$work/launch.json")
launch_budget=60
if [[ ${MXA_CUDA_COMPILE:-0} == 1 ]]; then launch+=(--compile); launch_budget=360; fi
step launch "$launch_budget" benchmarks/cuda_launch.py "${launch[@]}"
bench m5-bf16-b1024 60 "${m5[@]}" --device cuda --batch-size 1024 --amp bf16 --channels-last --repeats 10
step pytest-benchmark 60 -m pytest benchmarks/test_bench_roi.py benchmarks/test_bench_inference.py \
    --benchmark-only -q -n 0 -k cuda -p no:cacheprovider --benchmark-json "$work/pytest-benchmark.json"
# ONNX Runtime on this machine's CPU (how CPU users deploy)
bench m5-cpu-onnx-b32 90 "${m5[@]}" --device cpu --runtime eager --runtime onnx --runtime onnx-static \
    --batch-size 32 --repeats 10 --no-train
# 3. the other models
bench bf16-b1024 150 "${others[@]}" --device cuda --batch-size 1024 --amp bf16 --channels-last --repeats 10
bench fp32-b256 120 "${others[@]}" "${m5[@]}" --device cuda --batch-size 256 --amp none --repeats 10 --no-train
# 4. torch.compile, only with MXA_CUDA_COMPILE=1: compiling M5's five variants at batch 1 took more than
#    190 s on an H200 (not finished), more than a 15-minute lease leaves after the rest
if [[ ${MXA_CUDA_COMPILE:-0} == 1 ]]; then
    bench m5-b1-compile 400 "${m5[@]}" --runtime compile --device cuda --batch-size 1 --repeats 30 --no-train
fi
"$py" scripts/benchmark_summary.py "$work"/m5-bf16-b1024.json "$work"/m5-b1.json "$work"/m5-b32.json \
    "$work"/m5-cpu-onnx-b32.json "$work"/bf16-b1024.json "$work"/fp32-b256.json "$work"/m5-b1-compile.json \
    "$work"/pytest-benchmark.json --output "$out/$dev.json"
if [[ -s $work/launch.json ]]; then cp "$work/launch.json" "$out/$dev-launch.json"; echo "wrote $out/$dev-launch.json"; fi
echo "wrote $out/$dev.json (steps' own files in $work)"
