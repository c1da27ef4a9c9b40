from __future__ import annotations

import numpy as np
import pytest
import torch

from mxa.data import CHEXPERT_LABELS
from mxa.metrics.classification import auroc, compute_metrics
from mxa.metrics.report import mean_ci

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
    assert m["undefined_reasons"] == {"D": "one class only"} and m["n_nonfinite"] == 0
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


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_auroc_refuses_nonfinite_scores(bad: float) -> None:
    targets = torch.tensor([0, 1] * 4)
    with pytest.raises(ValueError, match=r"8 of 8 scores are not finite.*NaN/inf"):
        auroc(torch.full((8,), bad), targets)  # torchmetrics alone returns a number here
    scores = torch.linspace(0, 1, 8)
    scores[3] = bad
    with pytest.raises(ValueError, match="1 of 8 scores"):
        auroc(scores, targets)


def test_nan_only_model_gets_no_score(fixed_arrays) -> None:
    _, targets, labels = fixed_arrays
    m = compute_metrics(np.full_like(targets, np.nan), targets, labels=labels, n_bootstrap=20)
    assert all(v is None for v in m["per_label_auc"].values())
    for k in ("macro_auc", "micro_auc", "competition_auc", "f1_micro", "f1_macro", "accuracy"):
        assert m[k] is None, k
    assert all(v is None for v in m["per_label_f1"].values())
    assert m["undefined_labels"] == labels
    assert m["undefined_reasons"] == {n: "non-finite scores (200 of 200)" for n in labels}
    assert m["n_nonfinite"] == 800
    assert all(v is None for v in m["ci"].values())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_one_nonfinite_score_undefines_its_label(fixed_arrays, bad: float) -> None:
    probs, targets, labels = fixed_arrays
    probs = probs.copy()
    probs[7, 0] = bad
    m = compute_metrics(probs, targets, labels=labels)
    assert m["per_label_auc"]["A"] is None and m["per_label_f1"]["A"] is None
    assert m["undefined_labels"] == ["A", "D"]
    assert m["undefined_reasons"] == {"A": "non-finite scores (1 of 200)", "D": "one class only"}
    assert m["n_nonfinite"] == 1
    # the other labels are still reported, exactly as before
    assert m["per_label_auc"]["B"] == pytest.approx(
        sklearn_metrics.roc_auc_score(targets[:, 1], probs[:, 1]), abs=1e-6
    )
    # a partly broken model is not ranked on its healthy labels only
    for k in ("macro_auc", "micro_auc", "f1_micro", "f1_macro", "accuracy"):
        assert m[k] is None, k


def test_masked_nonfinite_scores_are_ignored(fixed_arrays) -> None:
    probs, targets, labels = fixed_arrays
    mask = np.ones_like(targets, dtype=bool)
    mask[:3, 0] = False
    nan_probs = probs.copy()
    nan_probs[:3, 0] = np.nan  # e.g. uncertain labels under the "ignore" policy
    m = compute_metrics(nan_probs, targets, mask, labels=labels)
    ref = compute_metrics(probs, targets, mask, labels=labels)
    assert m["n_nonfinite"] == 0 and m["undefined_labels"] == ["D"]
    for k in ("macro_auc", "micro_auc", "f1_micro", "f1_macro", "accuracy", "per_label_auc"):
        assert m[k] == ref[k], k


def test_nonfinite_competition_label() -> None:
    rng = np.random.default_rng(2)
    targets = (rng.random((100, 14)) < 0.3).astype(np.float32)
    probs = rng.random((100, 14)).astype(np.float32)
    probs[0, CHEXPERT_LABELS.index("No Finding")] = np.nan  # not a competition label
    assert compute_metrics(probs, targets)["competition_auc"] is not None
    probs[0, CHEXPERT_LABELS.index("Edema")] = np.nan
    assert compute_metrics(probs, targets)["competition_auc"] is None


def test_perfect_ranking_auc_is_not_above_one() -> None:
    # torchmetrics returns 1.0000001 for exactly this input (float32 trapezoids)
    scores = torch.arange(13, dtype=torch.float32) / 13
    targets = (torch.arange(13) >= 10).long()
    assert auroc(scores, targets) == 1.0
    # and every bootstrap bound stays in [0, 1] for perfectly separated data
    rng = np.random.default_rng(3)
    t = (rng.random((60, 4)) < 0.4).astype(np.float32)
    p = np.where(t > 0, 0.6 + 0.4 * rng.random(t.shape), 0.4 * rng.random(t.shape)).astype(np.float32)
    m = compute_metrics(p, t, labels=["A", "B", "C", "D"], n_bootstrap=50)
    for k in ("macro_auc", "micro_auc"):  # float32 may also land just below 1
        assert m[k] == pytest.approx(1.0, abs=1e-6) and m[k] <= 1.0
    bounds = [b for ci in m["ci"].values() if ci is not None for b in ci]
    assert bounds and all(0.0 <= b <= 1.0 for b in bounds)


def test_no_scored_entries_has_no_accuracy(fixed_arrays) -> None:
    probs, targets, labels = fixed_arrays
    m = compute_metrics(probs, targets, np.zeros_like(targets, dtype=bool), labels=labels)
    assert m["accuracy"] is None and m["macro_auc"] is None  # not "0% correct"


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


def test_report_intervals_stay_inside_the_metric_range() -> None:
    wide = mean_ci([0.99, 0.49], bounds=(0.0, 1.0))  # two seeds far apart: t(1) is 12.7
    assert wide["ci"] == [0.0, 1.0] and wide["mean"] == pytest.approx(0.74)
    assert mean_ci([0.99, 0.49])["ci"][1] > 1.0  # unbounded, the interval leaves [0, 1]
