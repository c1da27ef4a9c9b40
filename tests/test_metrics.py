from __future__ import annotations

import numpy as np
import pytest
import torch

from mxa.data import CHEXPERT_LABELS
from mxa.engine.metrics import compute_metrics
from mxa.engine.report import mean_ci

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.fixture
def fixed_arrays():
    rng = np.random.default_rng(0)
    n, c = 200, 4
    targets = (rng.random((n, c)) < [0.3, 0.1, 0.5, 0.0]).astype(np.float32)  # label 3: no positives
    probs = np.clip(targets * 0.3 + rng.random((n, c)) * 0.7, 0, 1).astype(np.float32)
    return probs, targets, ["A", "B", "C", "D"]


def test_against_sklearn(fixed_arrays) -> None:
    probs, targets, labels = fixed_arrays
    m = compute_metrics(probs, targets, labels=labels)
    for j, name in enumerate(labels[:3]):
        assert m["per_label_auc"][name] == pytest.approx(
            sklearn_metrics.roc_auc_score(targets[:, j], probs[:, j]), abs=1e-6
        )
    assert m["per_label_auc"]["D"] is None and m["undefined_labels"] == ["D"]
    defined = [sklearn_metrics.roc_auc_score(targets[:, j], probs[:, j]) for j in range(3)]
    assert m["macro_auc"] == pytest.approx(np.mean(defined), abs=1e-6)  # D is not a 0.5 in the mean
    assert m["micro_auc"] == pytest.approx(
        sklearn_metrics.roc_auc_score(targets.ravel(), probs.ravel()), abs=1e-6
    )
    pred = probs >= 0.5
    assert m["f1_micro"] == pytest.approx(sklearn_metrics.f1_score(targets.ravel(), pred.ravel()), abs=1e-9)
    f1s = [sklearn_metrics.f1_score(targets[:, j], pred[:, j]) for j in range(3)]
    # label D has no positives and no predicted positives only if all probs < 0.5; it is undefined or 0
    f1_d = m["per_label_f1"]["D"]
    expected_macro = np.mean(f1s + ([f1_d] if f1_d is not None else []))
    assert m["f1_macro"] == pytest.approx(expected_macro, abs=1e-9)
    assert m["accuracy"] == pytest.approx(
        sklearn_metrics.accuracy_score(targets.ravel(), pred.ravel()), abs=1e-9
    )


def test_mask_excludes_entries(fixed_arrays) -> None:
    probs, targets, labels = fixed_arrays
    mask = np.ones_like(targets, dtype=bool)
    mask[:50, 0] = False
    m = compute_metrics(probs, targets, mask, labels=labels)
    assert m["per_label_auc"]["A"] == pytest.approx(
        sklearn_metrics.roc_auc_score(targets[50:, 0], probs[50:, 0]), abs=1e-6
    )


def test_competition_auc_and_bootstrap() -> None:
    rng = np.random.default_rng(1)
    targets = (rng.random((300, 14)) < 0.3).astype(np.float32)
    probs = np.clip(targets * 0.4 + rng.random((300, 14)) * 0.6, 0, 1)
    m = compute_metrics(probs, targets, n_bootstrap=50)
    comp = [
        CHEXPERT_LABELS.index(n)
        for n in ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
    ]
    expected = np.mean([sklearn_metrics.roc_auc_score(targets[:, j], probs[:, j]) for j in comp])
    assert m["competition_auc"] == pytest.approx(expected, abs=1e-6)
    lo, hi = m["ci"]["macro_auc"]
    assert lo <= m["macro_auc"] <= hi and hi - lo < 0.2


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="same"):
        compute_metrics(torch.rand(5, 14), torch.rand(4, 14))
    with pytest.raises(ValueError, match="labels"):
        compute_metrics(torch.rand(5, 3), torch.rand(5, 3))


def test_mean_ci() -> None:
    r = mean_ci([0.8, 0.82, 0.84])
    assert r["mean"] == pytest.approx(0.82)
    assert r["ci"][0] < 0.8 and r["ci"][1] > 0.84  # t quantile with 2 d.o.f. is wide
    assert mean_ci([0.5])["ci"] is None and mean_ci([])["mean"] is None
