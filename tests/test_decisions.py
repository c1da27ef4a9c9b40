"""Operating points, calibration, ECE/Brier and the decision rule a model carries: hand-computed cases,
brute-force oracles, and the round trip through checkpoints, exports, `mxa eval` and `mxa predict`."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mxa
from mxa.decision.calibration import fit_calibration
from mxa.decision.report import decision_report
from mxa.decision.rule import DecisionRule
from mxa.decision.thresholds import choose_thresholds, operating_points, parse_threshold_spec
from mxa.files.checkpoint import save_checkpoint
from mxa.metrics.classification import brier_score, compute_metrics, expected_calibration_error

L3 = ("a", "b", "c")


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


# --- thresholds -------------------------------------------------------------------------------------------
def test_thresholds_hand_computed_cases() -> None:
    # a: perfectly separable; b: no positives; c: one constant score
    probs = torch.tensor([[0.1, 0.2, 0.3], [0.2, 0.4, 0.3], [0.8, 0.6, 0.3], [0.9, 0.7, 0.3]])
    targets = torch.tensor([[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1]]).float()
    th, why = choose_thresholds(probs, targets, None, L3, "youden")
    assert th["a"] == pytest.approx(0.5)  # halfway between 0.2 and 0.8, not 0.8
    assert th["b"] is None and why["b"] == "no positives"
    assert th["c"] == pytest.approx(0.65)  # J = 0 everywhere: the highest cut (above the score)
    th, _ = choose_thresholds(probs, targets, None, L3, "f1")
    assert th["a"] == pytest.approx(0.5) and th["c"] == pytest.approx(0.15)  # F1 best: all positive
    th, why = choose_thresholds(probs, targets, None, L3, "0.35")
    assert th == {"a": 0.35, "b": 0.35, "c": 0.35} and why == {}
    op = operating_points(probs, targets, None, L3, {"a": 0.5, "b": 0.5, "c": 0.65}, n_bootstrap=0)
    assert op["sensitivity"]["a"] == 1 and op["specificity"]["a"] == 1 and op["ppv"]["a"] == 1
    assert op["sensitivity"]["b"] is None and op["specificity"]["b"] == pytest.approx(0.5)  # 0.6, 0.7 >= 0.5
    assert op["ppv"]["c"] is None and op["npv"]["c"] == pytest.approx(0.5) and op["sensitivity"]["c"] == 0


def test_sensitivity_and_specificity_targets() -> None:
    pos, neg = [0.2, 0.6, 0.7, 0.8, 0.9], [0.1, 0.3, 0.5]
    probs = torch.tensor(pos + neg)[:, None]
    targets = torch.tensor([1.0] * 5 + [0.0] * 3)[:, None]
    th, _ = choose_thresholds(probs, targets, None, ["x"], "sensitivity:0.8")
    assert th["x"] == pytest.approx(0.55)  # 4 of 5 positives, the highest such cut
    th, _ = choose_thresholds(probs, targets, None, ["x"], "specificity:0.66")
    assert th["x"] == pytest.approx(0.4)  # 2 of 3 negatives below, the lowest such cut
    op = operating_points(probs, targets, None, ["x"], {"x": 0.55}, n_bootstrap=0)
    assert op["sensitivity"]["x"] == pytest.approx(0.8) and op["specificity"]["x"] == 1


def test_masked_entries_are_ignored() -> None:
    probs = torch.tensor([[0.1], [0.9], [0.95]])
    targets = torch.tensor([[0.0], [1.0], [0.0]])
    mask = torch.tensor([[True], [True], [False]])
    th, _ = choose_thresholds(probs, targets, mask, ["x"], "youden")
    assert th["x"] == pytest.approx(0.5)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=2, max_size=30),
    st.sampled_from(["youden", "f1", "sensitivity:0.7", "specificity:0.7"]),
)
def test_thresholds_match_brute_force(pairs, method) -> None:
    s = torch.tensor([p for p, _ in pairs], dtype=torch.float64)
    y = torch.tensor([float(t) for _, t in pairs], dtype=torch.float64)
    th, why = choose_thresholds(s[:, None], y[:, None], None, ["x"], method)
    if y.min() == y.max():
        assert th["x"] is None and why["x"]
        return
    u = sorted(set(s.tolist()))
    cuts = (
        [u[0] / 2] + [(a + b) / 2 for a, b in itertools.pairwise(u)] + [(u[-1] + 1) / 2 if u[-1] < 1 else 1.1]
    )

    def score(t: float) -> tuple[float, float, float]:
        pred = s >= t
        tp, fp = float((pred & (y == 1)).sum()), float((pred & (y == 0)).sum())
        p, n = float(y.sum()), float((y == 0).sum())
        return tp / p, 1 - fp / n, 2 * tp / (tp + fp + p)

    got = score(th["x"])
    if method == "youden":
        assert got[0] + got[1] == pytest.approx(max(a + b for a, b, _ in map(score, cuts)))
    elif method == "f1":
        assert got[2] == pytest.approx(max(f for *_, f in map(score, cuts)))
    elif method.startswith("sensitivity"):
        ok = [score(t) for t in cuts if score(t)[0] >= 0.7]
        assert got[0] >= 0.7 and got[1] == pytest.approx(max(b for _, b, _ in ok))
    else:
        ok = [score(t) for t in cuts if score(t)[1] >= 0.7]
        assert got[1] >= 0.7 and got[0] == pytest.approx(max(a for a, _, _ in ok))


def test_threshold_spec_errors(tmp_path: Path) -> None:
    for bad in ("median", "sensitivity:1.5", "sensitivity:x", "1.2"):
        with pytest.raises(ValueError, match="threshold|sensitivity"):
            parse_threshold_spec(bad)
    with pytest.raises(FileNotFoundError):
        parse_threshold_spec(str(tmp_path / "none.json"))
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"a": 0.2}))
    th, why = choose_thresholds(torch.rand(4, 3), torch.ones(4, 3), None, L3, str(f))
    assert th == {"a": 0.2, "b": None, "c": None} and why["b"] == "no threshold given"
    f.write_text(json.dumps({"zzz": 0.2}))
    with pytest.raises(ValueError, match="unknown labels"):
        choose_thresholds(torch.rand(4, 3), torch.ones(4, 3), None, L3, str(f))


def test_operating_point_cis_bracket_the_point() -> None:
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(300, 1, generator=g) < 0.4).float()
    p = (0.35 * y + 0.65 * torch.rand(300, 1, generator=g)).clamp(0, 1)
    op = operating_points(p, y, None, ["x"], {"x": 0.5}, n_bootstrap=100)
    for k in ("sensitivity", "specificity", "ppv", "npv"):
        lo, hi = op["ci"][f"{k}/x"]
        assert lo <= op[k]["x"] <= hi and hi - lo < 0.3


# --- calibration ------------------------------------------------------------------------------------------
def test_temperature_and_platt_hand_computed() -> None:
    # label a: every logit 2, 7 of 10 positive -> sigmoid(2 / T) = 0.7
    # label b: logit -1 with 1 of 4 positive, +1 with 4 of 5 -> a z + b hits logit(0.25) and logit(0.8)
    z = torch.tensor([[2.0, -1.0]] * 4 + [[2.0, 1.0]] * 5 + [[2.0, 1.0]])
    ya = [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    yb = [1, 0, 0, 0, 1, 1, 1, 1, 0, 0]
    mask = torch.ones(10, 2, dtype=torch.bool)
    mask[9, 1] = False  # the tenth row of b is not scored
    y = torch.tensor([ya, yb]).T.float()
    rule, why = fit_calibration(z, y, mask, ["a", "b"], "temperature")
    assert rule.temperatures["a"] == pytest.approx(2 / _logit(0.7), rel=1e-4) and "a" not in why
    rule, _ = fit_calibration(z, y, mask, ["a", "b"], "platt")
    a, b = rule.slope[1], rule.intercept[1]
    assert a == pytest.approx((_logit(0.8) - _logit(0.25)) / 2, rel=1e-3)
    assert b == pytest.approx((_logit(0.8) + _logit(0.25)) / 2, abs=1e-3)
    p = rule.probabilities(torch.tensor([[0.0, -1.0], [0.0, 1.0]]))[:, 1]
    assert p.tolist() == pytest.approx([0.25, 0.8], abs=1e-3)


def test_calibration_degenerate_labels() -> None:
    z = torch.tensor([[-3.0, 0.5, 0.0], [-2.0, 1.0, 0.0], [2.0, 2.0, 0.0], [3.0, 3.0, 0.0]])
    y = torch.tensor([[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1]]).float()
    rule, why = fit_calibration(z, y, None, L3, "temperature")
    t = rule.temperatures
    assert t["a"] == pytest.approx(0.01) and "separable" in why["a"]  # sharpened to the bound
    assert rule.probabilities(z)[:, 0].tolist() == pytest.approx([0, 0, 1, 1], abs=1e-12)
    assert t["b"] == 1.0 and "no positives" in why["b"]  # left as is
    assert t["c"] == pytest.approx(1.0) and "constant" in why["c"]
    with pytest.raises(ValueError, match="calibration must be"):
        fit_calibration(z, y, None, L3, "isotonic")


def test_calibration_lowers_ece_of_overconfident_scores() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2000, 2, generator=g) * 2
    y = (torch.rand(2000, 2, generator=g) < torch.sigmoid(z / 3)).float()  # true temperature 3
    rule, _ = fit_calibration(z, y, None, ["a", "b"], "temperature")
    assert [rule.temperatures[n] for n in "ab"] == pytest.approx([3, 3], rel=0.15)
    before = expected_calibration_error(torch.sigmoid(z).flatten(), y.flatten())
    after = expected_calibration_error(rule.probabilities(z).flatten(), y.flatten())
    assert after < before / 2


def test_ece_and_brier_hand_computed() -> None:
    y = torch.tensor([0.0, 1.0, 1.0, 1.0])
    assert expected_calibration_error(torch.full((4,), 0.3), y) == pytest.approx(abs(0.3 - 0.75))
    assert expected_calibration_error(torch.tensor([0.1, 0.1, 0.9, 0.9]), y) == pytest.approx(0.25)
    assert brier_score(torch.tensor([0.3, 0.3]), torch.tensor([1.0, 0.0])) == pytest.approx(0.29)
    assert expected_calibration_error(torch.tensor([]), torch.tensor([])) is None
    assert brier_score(torch.tensor([float("nan")]), torch.tensor([1.0])) is None
    m = compute_metrics(torch.full((4, 3), 0.3), torch.stack([y] * 3, 1), labels=L3)
    assert m["ece"] == pytest.approx(0.45) and m["brier"] == pytest.approx(((0.7**2) * 3 + 0.09) / 4)
    assert set(m["per_label_ece"]) == set(L3)


def test_decision_report_before_after_and_stored_rule() -> None:
    g = torch.Generator().manual_seed(2)
    z = torch.randn(400, 3, generator=g) * 3
    y = (torch.rand(400, 3, generator=g) < torch.sigmoid(z / 2)).float()
    out, rule, probs = decision_report(z, y, None, L3, "youden", "temperature", n_bootstrap=20)
    assert set(out["ece"]) == {"before", "after"} and out["ece"]["after"] < out["ece"]["before"]
    assert out["threshold_method"] == "youden" and set(out["thresholds"]) == set(L3)
    assert {"sensitivity", "specificity", "ppv", "npv"} <= set(out) and "sensitivity/a" in out["ci"]
    assert rule.calibration == "temperature" and rule.thresholds == out["thresholds"]
    # thresholds are on the calibrated scale: the decisions match the report's sensitivity
    pos, _ = rule.decide(rule.probabilities(z))
    sens = float((pos[:, 0] & (y[:, 0] == 1)).sum() / (y[:, 0] == 1).sum())
    assert sens == pytest.approx(out["sensitivity"]["a"])
    assert torch.allclose(probs["after"], rule.probabilities(z))
    # a saved model evaluated again without flags: its stored points are reported, nothing new to save
    again, none, _ = decision_report(z, y, None, L3, current=rule, n_bootstrap=0)
    assert none is None and again["thresholds"] == rule.thresholds
    assert again["sensitivity"]["a"] == pytest.approx(out["sensitivity"]["a"])
    with pytest.raises(ValueError, match="--thresholds too"):
        decision_report(z, y, None, L3, calibrate="platt", current=rule)
    plain, _, _ = decision_report(z, y, None, L3, n_bootstrap=0)
    assert isinstance(plain["ece"], float) and "thresholds" not in plain


# --- the rule, stored -------------------------------------------------------------------------------------
def test_rule_round_trip_and_validation() -> None:
    rule = DecisionRule(
        L3, {"a": 0.3, "b": None, "c": 0.6}, "youden", "platt", (1.0, 2.0, 0.5), (0.0, -1.0, 1)
    )
    back = DecisionRule.from_dict(json.loads(json.dumps(rule.to_dict())))
    assert back == rule
    t = DecisionRule(L3, None, None, "temperature", (0.5, 1.0, 2.0), (0.0, 0.0, 0.0))
    assert DecisionRule.from_dict(t.to_dict()).temperatures == pytest.approx({"a": 2.0, "b": 1.0, "c": 0.5})
    pos, defined = rule.decide(torch.tensor([[0.31, 0.9, 0.59]]))
    assert pos.tolist() == [[True, False, False]] and defined.tolist() == [[True, False, True]]
    with pytest.raises(ValueError, match="> 0"):
        DecisionRule(L3, None, None, "temperature", (0.5, -1.0, 2.0), (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="finite"):
        DecisionRule(L3, {"a": float("nan")})
    with pytest.raises(ValueError, match="cannot be read"):
        DecisionRule.from_dict({"labels": ["a"], "calibration": {"method": "temperature", "temperature": {}}})


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = timm.create_model("efficientvit_ml_m0", img_size=64)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    kwargs = {"img_size": 64, "mxa": True}
    return save_checkpoint(
        {"model_name": "efficientvit_ml_m0", "model_kwargs": kwargs, "model": model.state_dict()}, path
    )


def _rule_for(model: torch.nn.Module) -> DecisionRule:
    labels = tuple(model.label_names)
    th = {n: 0.5 for n in labels}
    th[labels[1]] = None
    return DecisionRule(labels, th, "youden", "temperature", tuple([0.5] * 14), tuple([0.0] * 14))


def test_rule_survives_checkpoint_export_and_onnx(tiny_ckpt: Path, tmp_path: Path, shared_cxr: Path) -> None:
    from mxa.files.export import save_with_decision

    model = mxa.load_model(tiny_ckpt)
    assert model.decision_rule is None
    rule = _rule_for(model)
    with pytest.raises(ValueError, match="another file"):
        save_with_decision(tiny_ckpt, tiny_ckpt, rule)
    saved = save_with_decision(tiny_ckpt, tmp_path / "with_rule.pt", rule)
    loaded = mxa.load_model(saved)
    assert loaded.decision_rule == rule
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    st_path = mxa.export_safetensors(loaded, tmp_path / "share" / "m.safetensors")
    assert mxa.load_model(st_path).decision_rule == rule
    cfg = json.loads((tmp_path / "share" / "config.json").read_text())
    assert cfg["decision"]["thresholds"][model.label_names[0]] == 0.5
    assert "bicubic" in cfg["pretrained_cfg"]["preprocessing"]
    with pytest.raises(ValueError, match="config.json"):
        save_with_decision(st_path, tmp_path / "share" / "other.safetensors", rule)
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    onnx_path = mxa.export_onnx(loaded, tmp_path / "m.onnx", opset=20, verify=False)  # test_export verifies
    meta = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).get_modelmeta()
    props = meta.custom_metadata_map
    assert json.loads(props["label_names"]) == list(model.label_names)
    assert json.loads(props["input_size"]) == [1, 64, 64]
    assert json.loads(props["mean"]) == pytest.approx([0.449]) and "bicubic" in props["preprocessing"]
    assert DecisionRule.from_dict(json.loads(props["mxa_decision"])) == rule
    # the docs' ONNX Runtime example, as a new user would paste it, gives what `mxa predict` gives
    from mxa.predict import predict_files

    doc = (Path(__file__).resolve().parents[1] / "docs" / "deployment.md").read_text()
    code = doc.split("<!-- onnxruntime-example -->")[1].split("```python")[1].split("```")[0]
    img = shared_cxr / "00000001_000.png"
    code = code.replace('"model.onnx"', repr(str(onnx_path))).replace('"00000001_000.png"', repr(str(img)))
    scope: dict = {}
    exec(compile(code.replace("print(", "(lambda *a: None)("), "deployment.md", "exec"), scope)
    res = predict_files([img], tmp_path / "p.csv", model=loaded)
    assert scope["p"].tolist() == pytest.approx(res.rows[0][1], abs=2e-4)
    th = rule.thresholds
    expect = [
        "" if th[n] is None else ("positive" if q >= th[n] else "negative") for n, q in zip(th, scope["p"])
    ]
    assert expect == res.rows[0][2]


def test_rule_for_other_labels_is_refused(tiny_ckpt: Path, tmp_path: Path) -> None:
    from mxa.files.checkpoint import load_checkpoint

    ck = load_checkpoint(tiny_ckpt)
    ck.pop("integrity")
    ck["decision"] = DecisionRule(("x",) * 14).to_dict()
    save_checkpoint(ck, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="labels"):
        mxa.load_model(tmp_path / "bad.pt")


def test_cli_eval_thresholds_calibrate_save_then_predict(
    tiny_ckpt: Path, tmp_path: Path, shared_cxr: Path
) -> None:
    from mxa.cli import main

    js, saved = tmp_path / "m.json", tmp_path / "decided.pt"
    args = [
        "eval",
        "--checkpoint",
        str(tiny_ckpt),
        "--val-samples",
        "48",
        "--bootstrap",
        "10",
        "--no-progress",
    ]
    args += [
        "--json",
        str(js),
        "--roc",
        str(tmp_path / "roc.png"),
        "--reliability",
        str(tmp_path / "rel.png"),
    ]
    assert (
        main([*args, "--thresholds", "youden", "--calibrate", "temperature", "--save-model", str(saved)]) == 0
    )
    m = json.loads(js.read_text())
    assert set(m["ece"]) == {"before", "after"} and set(m["brier"]) == {"before", "after"}
    assert m["calibration"]["method"] == "temperature" and m["threshold_method"] == "youden"
    for key in ("thresholds", "sensitivity", "specificity", "ppv", "npv"):
        assert set(m[key]) == set(m["per_label_auc"]), key
    for name, t in m["thresholds"].items():  # a label without positives in 48 phantoms has no threshold
        assert (t is None) == (name in m["undefined_thresholds"])
    assert (tmp_path / "rel.png").stat().st_size > 10_000
    rule = mxa.load_model(saved).decision_rule
    assert rule.thresholds == m["thresholds"] and rule.calibration == "temperature"
    # predict with the saved model: calibrated probabilities and one decision column per label
    out = tmp_path / "preds.csv"
    assert (
        main(["predict", "--checkpoint", str(saved), str(shared_cxr / "00000001_000.png"), "--out", str(out)])
        == 0
    )
    rows = list(csv.DictReader(out.open()))
    model = mxa.load_model(saved)
    from mxa.data import build_transforms, load_xray

    x = build_transforms(model, train=False)(load_xray(shared_cxr / "00000001_000.png"))[None]
    with torch.no_grad():
        p = rule.probabilities(model(x))[0]
    for j, name in enumerate(model.label_names):
        assert float(rows[0][name]) == pytest.approx(float(p[j]), abs=1e-5)
        t = rule.thresholds[name]
        assert rows[0][f"{name} decision"] == ("" if t is None else ("positive" if p[j] >= t else "negative"))
    # flags that cannot work fail before the evaluation, with one line
    assert main([*args, "--save-model", str(tmp_path / "x.pt")]) == 2
    assert main([*args, "--thresholds", "median"]) == 2


def test_predict_without_rule_has_no_decision_columns(
    tiny_ckpt: Path, tmp_path: Path, shared_cxr: Path
) -> None:
    from mxa.predict import predict_files

    res = predict_files([shared_cxr / "00000001_000.png"], tmp_path / "p.csv", checkpoint=tiny_ckpt)
    header = next(csv.reader((tmp_path / "p.csv").open()))
    assert res.decision_rule is None and not any(h.endswith(" decision") for h in header)
    assert np.isclose(sum(1 for _ in header), 15)
