"""The six sizes with and without MXA, and timm's own EfficientViT: inference latency."""

from __future__ import annotations

import os

import pytest
import timm
import torch

import mxa  # noqa: F401  (registers the models)
from conftest import sync

SIZES = [f"m{i}" for i in range(6)]
BATCH = int(os.environ.get("MXA_BENCH_BATCH", "32"))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", ["mxa", "baseline", "timm"])
def test_inference(benchmark, size, variant, device) -> None:
    benchmark.group = f"efficientvit {size} inference, batch {BATCH}, 224px"
    if variant == "timm":
        model = timm.create_model(f"efficientvit_{size}", in_chans=1, num_classes=14)
    else:
        model = timm.create_model(f"efficientvit_ml_{size}", mxa=variant == "mxa")
    model.eval().to(device)
    x = torch.randn(BATCH, 1, 224, 224, device=device)

    def run():
        with torch.inference_mode():
            model(x)
        sync(device)

    benchmark.pedantic(run, warmup_rounds=2, rounds=8, iterations=1)
