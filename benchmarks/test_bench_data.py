"""Data loading, images per second in one worker: phantom generation, PNG loading + transforms."""

from __future__ import annotations

import pytest
import timm

import mxa  # noqa: F401
from mxa.data import CheXpertDataset, PhantomCXR, build_transforms, write_phantom_chexpert

N = 64


@pytest.fixture(scope="module")
def model():
    return timm.create_model("efficientvit_ml_m5", mxa=False)


@pytest.mark.benchmark(group="data: images per worker")
def test_phantom_224(benchmark, model) -> None:
    ds = PhantomCXR(N, 224, transform=build_transforms(model, train=False))
    benchmark.pedantic(lambda: [ds[i] for i in range(N)], rounds=3, iterations=1)
    benchmark.extra_info["images_per_call"] = N


@pytest.mark.parametrize("train", [False, True], ids=["eval-transform", "train-transform-randaugment"])
@pytest.mark.benchmark(group="data: images per worker")
def test_chexpert_png_320(benchmark, model, tmp_path_factory, train) -> None:
    # a pre-resized CheXpert (320 px PNGs), loaded and transformed to 224 as in training
    root = tmp_path_factory.mktemp("cx")
    write_phantom_chexpert(root, n_train=N, n_valid=2, image_size=320)
    ds = CheXpertDataset(root, "train", transform=build_transforms(model, train=train))
    benchmark.pedantic(lambda: [ds[i] for i in range(N)], rounds=3, iterations=1)
    benchmark.extra_info["images_per_call"] = N
