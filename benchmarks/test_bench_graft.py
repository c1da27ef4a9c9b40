"""MXA grafted into other backbones vs the same model without: inference latency, batch 32, 224 px.

One group per family, both variants in it: compare the rows with `--benchmark-group-by=group`.
Goal: <= 1.15x latency (parameters <= +3% and FLOPs <= +2% are checked in tests/test_graft.py and by
`mxa bench --model densenet121_mxa`, which also interleaves the two variants).

    pytest benchmarks/test_bench_graft.py --benchmark-only -q -p no:randomly --benchmark-group-by=group
"""

from __future__ import annotations

import os

import pytest
import timm
import torch
from torch import nn

import mxa
from conftest import sync

BATCH = int(os.environ.get("MXA_BENCH_BATCH", "32"))

# family -> the timm model it is measured on (224 px, 1 channel, 14 classes)
FAMILIES = {
    "densenet": "densenet121",
    "resnet": "resnet50",
    "convnext": "convnext_tiny",
    "efficientnet": "efficientnet_b0",
    "mobilenetv3": "mobilenetv3_large_100",
    "vit": "deit_small_patch16_224",
    "swin": "swin_tiny_patch4_window7_224",
    "efficientvit_mit": "efficientvit_b1",
    "efficientvit_msra": "efficientvit_m5",
}


def _model(name: str, with_mxa: bool) -> nn.Module:
    model = timm.create_model(name, in_chans=1, num_classes=14)
    return mxa.add_mxa(model) if with_mxa else model


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("variant", ["mxa", "plain"])
def test_graft_inference(benchmark, family, variant, device) -> None:
    name = FAMILIES[family]
    benchmark.group = f"graft {family} ({name}) inference, batch {BATCH}, 224px"
    model = _model(name, variant == "mxa").eval().to(device)
    x = torch.randn(BATCH, 1, 224, 224, device=device)

    def run():
        with torch.inference_mode():
            model(x)
        sync(device)

    benchmark.pedantic(run, warmup_rounds=2, rounds=8, iterations=1)
