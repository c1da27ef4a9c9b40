"""Goal: a KD training step of M5 with cached teacher logits >= 2.5x faster than with online DenseNet-121."""

from __future__ import annotations

import pytest
import timm
import torch

import mxa
from conftest import sync
from mxa.distill import XRVTeacher

pytest.importorskip("torchxrayvision")
BATCH = 16


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    student = timm.create_model("efficientvit_ml_m5")
    teacher = XRVTeacher(weights=None)  # random weights: same cost as the real teacher
    x = torch.randn(BATCH, 1, 224, 224)
    y = torch.randint(0, 2, (BATCH, 14)).float()
    cached = teacher(x)
    return student, teacher, x, y, cached


def _step(student, opt, loss_fn, x, y, t_logits, t_mask):
    loss = loss_fn(student(x), y, t_logits, t_mask)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


@pytest.mark.benchmark(group="KD train step, M5, batch 16")
def test_kd_step_online_teacher(benchmark, setup) -> None:
    student, teacher, x, y, _ = setup
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5)
    loss_fn = mxa.DistillationLoss(alpha=0.5)
    benchmark.pedantic(
        lambda: _step(student, opt, loss_fn, x, y, *teacher(x)), warmup_rounds=1, rounds=5, iterations=1
    )


@pytest.mark.benchmark(group="KD train step, M5, batch 16")
def test_kd_step_cached_teacher(benchmark, setup) -> None:
    student, _, x, y, cached = setup
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5)
    loss_fn = mxa.DistillationLoss(alpha=0.5)
    benchmark.pedantic(
        lambda: _step(student, opt, loss_fn, x, y, *cached), warmup_rounds=1, rounds=5, iterations=1
    )
    sync(torch.device("cpu"))
