#!/usr/bin/env bash
# CPU benchmarks: `mxa bench` for M0-M5 and the pytest-benchmark suite; writes benchmarks/results/cpu.json.
# Usage: bash benchmarks/run_cpu.sh   (about 30 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results
mkdir -p "$out"
models=(); for i in 0 1 2 3 4 5; do models+=(--model "efficientvit_ml_m$i"); done
mxa bench "${models[@]}" --device cpu --batch-size 32 --repeats 12 --json "$out/cpu-bench-b32.json"
mxa bench --model efficientvit_ml_m5 --device cpu --batch-size 1 --repeats 40 --no-train --json "$out/cpu-bench-b1.json"
# MXA / baseline in every runtime, one interleaved run per batch size (issue 23; about 15 minutes)
rt=(--model efficientvit_ml_m5 --device cpu --runtime eager --runtime compile --runtime onnx --runtime deterministic)
mxa bench "${rt[@]}" --batch-size 1 --repeats 30 --no-train --json "$out/cpu-m5-b1-runtimes.json"
mxa bench "${rt[@]}" --batch-size 32 --repeats 20 --json "$out/cpu-m5-b32-runtimes.json"
# The deployment path (issue 34): the block mxa train builds in every runtime, ONNX with a symbolic and a
# fixed batch, operators and ONNX nodes per block (about 25 minutes)
dp=(--model efficientvit_ml_m5 --device cpu --runtime eager --runtime compile --runtime onnx --runtime onnx-static --no-train)
mxa bench "${dp[@]}" --batch-size 1 --repeats 40 --json "$out/cpu-m5-b1-deploy.json"
mxa bench "${dp[@]}" --batch-size 32 --repeats 8 --json "$out/cpu-m5-b32-deploy.json"
python -m pytest benchmarks/test_bench_roi.py benchmarks/test_bench_kd.py benchmarks/test_bench_inference.py \
    benchmarks/test_bench_data.py --benchmark-only -q -p no:randomly --benchmark-json "$out/cpu-pytest-benchmark.json"
python scripts/benchmark_summary.py "$out/cpu-bench-b32.json" "$out/cpu-bench-b1.json" "$out/cpu-pytest-benchmark.json" \
    --output "$out/cpu.json"
