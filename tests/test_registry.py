"""timm's own model checks over every model our modules register (parametrized from timm's registry).

The same checks as timm's ``tests/test_models.py``: a complete default cfg, forward and backward at the
cfg's input size (a fixed-size model at exactly that size), and FX forward and backward.
"""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models import create_feature_extractor, get_graph_node_names

import mxa  # noqa: F401  (registers the models)

OURS = sorted(timm.list_models(module="efficientvit_ml") + timm.list_models(module="grafted"))
SMALL = 64  # the size a model without a fixed input size is checked at (CPU time)


def test_the_registry_holds_every_model_we_name() -> None:
    from mxa.models import GRAFTED_MODEL_NAMES, MODEL_NAMES

    assert set(OURS) == set(MODEL_NAMES) | set(GRAFTED_MODEL_NAMES)


def _size(model: torch.nn.Module) -> tuple[int, int, int]:
    """The cfg's size for a fixed-size model (ours report the size they were built at), else SMALL."""
    cfg = model.pretrained_cfg
    c, h, w = cfg["input_size"]
    if hasattr(model, "input_hw"):  # efficientvit_ml_*: fixed to the img_size it was created with
        return (c, *model.input_hw)
    return (c, h, w) if cfg.get("fixed_input_size") else (c, SMALL, SMALL)


@pytest.mark.parametrize("name", OURS)
def test_default_cfg(name: str) -> None:
    model = timm.create_model(name, pretrained=False)
    cfg = model.pretrained_cfg
    for key in ("input_size", "mean", "std", "interpolation", "crop_pct", "first_conv", "classifier"):
        assert key in cfg, key
    assert cfg["input_size"][0] == 1 == len(cfg["mean"]) == len(cfg["std"])
    assert cfg["num_classes"] == model.num_classes == 14
    first = dict(model.named_parameters()).get(cfg["first_conv"] + ".weight")
    assert first is not None and first.shape[1] == 1, cfg["first_conv"]
    head = cfg["classifier"]
    assert any(n.startswith(head) for n, _ in model.named_parameters()), head


@pytest.mark.parametrize("name", OURS)
def test_forward_backward_at_the_cfg_size(name: str) -> None:
    model = timm.create_model(name, pretrained=False, **({} if "_mxa" in name else {"img_size": SMALL}))
    model.train()
    x = torch.randn(2, *_size(model))
    out = model(x)
    assert out.shape == (2, 14) and torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    # MXA's zero-init scale: everything behind it gets its gradient from the second step on
    assert all(".mxa." in n or n.startswith("mxa") for n in missing), missing[:5]


@pytest.mark.parametrize("name", OURS)
def test_fx_forward_and_backward(name: str) -> None:
    model = timm.create_model(name, pretrained=False, **({} if "_mxa" in name else {"img_size": SMALL}))
    x = torch.randn(1, *_size(model))
    model.eval()
    train_nodes, eval_nodes = get_graph_node_names(model)
    with torch.no_grad():
        fx = create_feature_extractor(model.eval(), return_nodes=[eval_nodes[-1]])
        torch.testing.assert_close(fx(x)[eval_nodes[-1]], model(x), rtol=1e-4, atol=1e-5)
    model.train()
    fx = create_feature_extractor(model, return_nodes=[train_nodes[-1]])
    out = fx(torch.cat([x, x.flip(-1)]))[train_nodes[-1]]  # batch 2: training BatchNorms need it
    out.mean().backward()
    assert torch.isfinite(out).all()
