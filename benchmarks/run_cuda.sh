#!/usr/bin/env bash
# CUDA benchmarks in one prepared script (under 5 minutes on one H100); writes benchmarks/results/<device>.json.
# Usage: bash benchmarks/run_cuda.sh        (needs a CUDA device; runs from the source tree, no install:
#        torch, timm, pytest-benchmark and, for the op tests, the test extra's packages where present)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-$(command -v python3 || command -v python)}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
mxa() { "$py" -m mxa "$@"; }
python() { "$py" "$@"; }
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
dev=$(python -c "import torch, re; print(re.sub(r'[^A-Za-z0-9]+', '-', torch.cuda.get_device_name(0)).strip('-').lower())")
out=benchmarks/results
tmp=$(mktemp -d)
models=(); for i in 0 1 2 3 4 5; do models+=(--model "efficientvit_ml_m$i"); done
# the EfficientViT paper's setting: large batches, fp16/bf16 autocast; fp32 too for reference
mxa bench "${models[@]}" --device cuda --batch-size 1024 --amp bf16 --channels-last --repeats 20 --json "$tmp/bf16-b1024.json"
mxa bench "${models[@]}" --device cuda --batch-size 256 --amp none --repeats 20 --no-train --json "$tmp/fp32-b256.json"
mxa bench --model efficientvit_ml_m5 --device cuda --batch-size 1 --amp none --repeats 100 --no-train --json "$tmp/fp32-b1.json"
mxa bench --model efficientvit_ml_m5 --device cuda --batch-size 1024 --amp bf16 --channels-last --compile --repeats 20 --no-train --json "$tmp/bf16-b1024-compile.json"
# MXA / baseline in every runtime (issue 23): eager, torch.compile, deterministic on the GPU; ONNX Runtime on
# this machine's CPU (ORT is how CPU users deploy)
rt=(--model efficientvit_ml_m5 --runtime eager --runtime compile --runtime deterministic)
mxa bench "${rt[@]}" --device cuda --batch-size 1 --repeats 50 --no-train --json "$tmp/runtimes-b1.json"
mxa bench "${rt[@]}" --device cuda --batch-size 32 --repeats 20 --json "$tmp/runtimes-b32.json"
mxa bench --model efficientvit_ml_m5 --device cpu --runtime eager --runtime onnx --batch-size 32 --repeats 10 \
    --no-train --json "$tmp/runtimes-cpu-b32.json"
python -m pytest benchmarks/test_bench_roi.py benchmarks/test_bench_inference.py --benchmark-only -q \
    -k "cuda" --benchmark-json "$tmp/pytest-benchmark.json" || true
python scripts/benchmark_summary.py "$tmp"/bf16-b1024.json "$tmp"/fp32-b256.json "$tmp"/fp32-b1.json \
    "$tmp"/bf16-b1024-compile.json "$tmp"/runtimes-b1.json "$tmp"/runtimes-b32.json "$tmp"/runtimes-cpu-b32.json \
    "$tmp"/pytest-benchmark.json --output "$out/$dev.json"
# the CUDA variants of the op matrix (float64 oracle, bf16, autocast, deterministic, compile) and of the layers
python -m pytest tests/test_op_matrix.py tests/test_roi.py -q -k cuda -p no:cacheprovider || true
echo "wrote $out/$dev.json"
