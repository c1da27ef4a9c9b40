"""Multi-label EfficientViT (M0-M5) with MXA blocks beside the attention (the paper's Table H.1).

Built on timm's ``efficientvit_msra`` model: the backbone, its blocks and its state-dict key names are
timm's. Three things are changed, each by a small subclass:

* every ``LocalWindowAttention`` becomes :class:`MXAWindowAttention`, which returns
  ``attn(x) + mxa(x)`` (the block's residual adds ``x``): the attention runs once, the MXA block beside it;
* the attention's eval-mode bias cache is dropped (:class:`FreshBiasAttention`): timm computes
  ``attention_biases[:, idxs]`` once in eval mode and never refreshes it while the weights change, so an
  EMA copy (always in eval mode) would be evaluated with stale biases;
* the ``NormLinear`` head (BatchNorm1d + Linear) uses its running statistics for a batch of one in
  training, instead of raising (:class:`BatchSafeNormLinear`).

``forward`` returns logits, never probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import (
    register_notrace_function,
    register_notrace_module,
    resize_rel_pos_bias_table_levit,
    to_2tuple,
)
from timm.models import adapt_input_conv, build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.efficientvit_msra import (
    CascadedGroupAttention,
    EfficientVitMsra,
    LocalWindowAttention,
    NormLinear,
)

from mxa.data.labels import CHEXPERT_LABELS
from mxa.data.sanity import check_model_input
from mxa.data.transforms import GRAY_MEAN, GRAY_STD
from mxa.layers.mxa_block import MXABlock
from mxa.models import hooks

__all__ = [
    "MXA_PER_STAGE",
    "BatchSafeNormLinear",
    "FreshBiasAttention",
    "MXAWindowAttention",
    "MultiLabelEfficientViT",
    "checkpoint_filter_fn",
]

#: Which blocks of a stage get MXA (``mxa_per_stage``): all of them (the paper's), or only the first or last.
MXA_PER_STAGE = ("all", "first", "last")


class FreshBiasAttention(CascadedGroupAttention):
    """timm's cascaded group attention without the eval-mode bias cache (timm PR #2795).

    Gathering the biases costs one small index per forward; a stale cache silently changes results.
    """

    def get_attention_biases(self, device: torch.device) -> torch.Tensor:
        return self.attention_biases[:, self.attention_bias_idxs]


@register_notrace_module  # like its parent: control flow on the input size in forward
class MXAWindowAttention(LocalWindowAttention):
    """Local window attention with an optional :class:`MXABlock` in parallel: ``attn(x) + mxa(x)``.

    Parameters of the attention keep timm's names (``attn.*``); the MXA block is ``mxa.*``.

    Shapes: (B, C, H, W) -> (B, C, H, W)
    """

    def __init__(
        self,
        dim: int,
        key_dim: int,
        num_heads: int = 8,
        attn_ratio: float = 4,
        resolution: int = 14,
        window_resolution: int = 7,
        kernels: Sequence[int] = (5, 5, 5, 5),
        mxa_cfg: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(dim, key_dim, num_heads, attn_ratio, resolution, window_resolution, tuple(kernels))
        # Same parameters and buffers; only the cached bias lookup is replaced.
        self.attn.__class__ = FreshBiasAttention
        self.mxa = MXABlock(dim, **mxa_cfg) if mxa_cfg is not None else None

    @classmethod
    def from_timm(cls, m: LocalWindowAttention, mxa_cfg: dict[str, Any] | None) -> MXAWindowAttention:
        """Build the replacement of timm's ``m`` with the same hyper-parameters."""
        a = m.attn
        kernels = tuple(int(dw.conv.kernel_size[0]) for dw in a.dws)
        return cls(
            m.dim,
            a.key_dim,
            m.num_heads,
            a.attn_ratio,
            m.resolution,
            m.window_resolution,
            kernels,
            mxa_cfg=mxa_cfg,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.mxa is not None:
            extra = self.mxa(x)
            # in place when nothing needs the attention output for a backward pass
            out = out.add_(extra) if not torch.is_grad_enabled() else out + extra
        return out


@register_notrace_module  # control flow on the batch size
class BatchSafeNormLinear(NormLinear):
    """timm's BatchNorm1d + Linear head that accepts a training batch of one (uses running stats)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            bn = self.bn
            x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        else:
            x = self.bn(x)
        return self.linear(self.drop(x))


@register_notrace_function
def _check_input(x: torch.Tensor, in_chans: int, input_hw: tuple[int, int]) -> None:
    if isinstance(x, torch.fx.Proxy):  # symbolic tracing: shapes are unknown, nothing to check
        return
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected a (B, {in_chans}, {input_hw[0]}, {input_hw[1]}) image batch, got {shape}")
    if x.shape[0] == 0:
        raise ValueError(
            f"the batch holds no image (shape {tuple(x.shape)}): give at least one, e.g. x[None] for a "
            f"single ({in_chans}, {input_hw[0]}, {input_hw[1]}) image"
        )
    if x.shape[1] == 3 and in_chans == 1 and bool((x[:, 1:] == x[:, :1]).all()):
        raise ValueError(
            f"the model expects 1-channel X-rays but got 3 identical channels (shape {tuple(x.shape)}): a "
            "gray image repeated for an ImageNet model; pass one channel, x[:, :1] (normalized with the "
            "model's one-channel mean/std, which mxa.data.build_transforms(model, train=False) does)"
        )
    if x.shape[1] != in_chans:
        raise ValueError(
            f"the model expects {in_chans}-channel images but got {x.shape[1]} channels "
            f"(shape {tuple(x.shape)}); create it with in_chans={x.shape[1]} or convert the images"
        )
    if tuple(x.shape[-2:]) != tuple(input_hw):
        raise ValueError(
            f"the model was built for {input_hw[0]}x{input_hw[1]} images but got "
            f"{x.shape[-2]}x{x.shape[-1]}; resize the images, create the model with "
            f"img_size={x.shape[-2]}, or call model.set_input_size({x.shape[-2]})"
        )


class MultiLabelEfficientViT(EfficientVitMsra):
    """EfficientViT-MultiLabel: timm's EfficientViT with MXA blocks and a multi-label head.

    Args:
        img_size: input size (int or (H, W)); the model checks every batch against it.
        in_chans: input channels (1 for X-rays; 3 works too).
        num_classes: number of labels (14 CheXpert observations by default). ``forward`` returns logits.
        embed_dim: channels of the three stages (timm's ``EfficientVitMsra``, as the next six).
        key_dim: query/key dimension per head, per stage.
        depth: blocks per stage.
        num_heads: attention heads per stage.
        window_size: local attention window per stage.
        kernels: depthwise kernel sizes of the heads' query convolutions.
        down_ops: downsampling between stages.
        global_pool: pooling before the head.
        drop_rate: dropout before the classifier.
        mxa: add an :class:`MXABlock` beside the attention of every attention block.
        mxa_stages: indices of the stages that get MXA (default: all); ignored when ``mxa=False``.
        mxa_per_stage: which blocks of those stages get MXA: ``"all"`` (the paper's, and ``mxa train``'s
            default), ``"first"`` or ``"last"`` (one block per stage: 3 of the 6 blocks of M0-M4, 3 of M5's 8;
            ``mxa train --mxa-per-stage``; what it costs: docs/localization.md).
        mxa_cfg: keyword arguments of :class:`MXABlock` (``reduction``, ``min_size``, ``init_scale``...).
        label_names: names of the outputs, kept as ``model.label_names``.

    Shapes: forward((B, in_chans, H, W)) -> (B, num_classes) logits.

    Examples:
        >>> import timm, torch, mxa
        >>> model = timm.create_model("efficientvit_ml_m0", img_size=128).eval()
        >>> model(torch.randn(2, 1, 128, 128)).shape
        torch.Size([2, 14])
        >>> len(model.mxa_blocks()), model.label_names[:2]
        (6, ('No Finding', 'Enlarged Cardiomediastinum'))
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 1,
        num_classes: int = len(CHEXPERT_LABELS),
        embed_dim: Sequence[int] = (64, 128, 192),
        key_dim: Sequence[int] = (16, 16, 16),
        depth: Sequence[int] = (1, 2, 3),
        num_heads: Sequence[int] = (4, 4, 4),
        window_size: Sequence[int] = (7, 7, 7),
        kernels: Sequence[int] = (5, 5, 5, 5),
        down_ops: Sequence[tuple[str, int]] = (("", 1), ("subsample", 2), ("subsample", 2)),
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        mxa: bool = True,
        mxa_stages: Sequence[int] | None = None,
        mxa_cfg: dict[str, Any] | None = None,
        label_names: Sequence[str] | None = None,
        mxa_per_stage: str = "all",
    ) -> None:
        super().__init__(
            img_size=img_size,
            in_chans=in_chans,
            num_classes=num_classes,
            embed_dim=tuple(embed_dim),
            key_dim=tuple(key_dim),
            depth=tuple(depth),
            num_heads=tuple(num_heads),
            window_size=tuple(window_size),
            kernels=tuple(kernels),
            down_ops=tuple(down_ops),
            global_pool=global_pool,
            drop_rate=drop_rate,
        )
        self.input_hw = to_2tuple(img_size)
        self.in_chans = in_chans  # timm sets it from 1.0.21 on
        n_stages = len(self.stages)
        if not mxa:
            stages_with_mxa: set[int] = set()
        elif mxa_stages is None:
            stages_with_mxa = set(range(n_stages))
        else:
            stages_with_mxa = {int(i) for i in mxa_stages}
            bad = sorted(i for i in stages_with_mxa if not 0 <= i < n_stages)
            if bad:
                raise ValueError(f"mxa_stages {bad} out of range: this model has stages 0..{n_stages - 1}")
        for stage in self.stages:  # the attention without timm's stale eval-mode bias cache, everywhere
            for blk in stage.blocks:
                blk.mixer.m = MXAWindowAttention.from_timm(blk.mixer.m, None)
        if mxa_per_stage not in MXA_PER_STAGE:
            raise ValueError(f"mxa_per_stage must be one of {MXA_PER_STAGE}, got {mxa_per_stage!r}")
        self.mxa_stages, self.mxa_cfg, self.mxa_per_stage = (), dict(mxa_cfg or {}), mxa_per_stage
        if stages_with_mxa:  # MXA goes in the one way it goes into any model: add_mxa
            from mxa.models.graft import add_mxa

            where: list[int | str] = sorted(stages_with_mxa)
            if mxa_per_stage != "all":  # one block per stage, by name
                last = {i: len(self.stages[i].blocks) - 1 for i in stages_with_mxa}
                where = [
                    f"stages.{i}.blocks.{0 if mxa_per_stage == 'first' else last[i]}" for i in sorted(last)
                ]
            add_mxa(self, where=where, **self.mxa_cfg)
        if num_classes > 0:
            self.head = BatchSafeNormLinear(self.head_hidden_size, num_classes, drop=self.drop_rate)
        if label_names is not None and len(label_names) != num_classes:
            raise ValueError(f"{len(label_names)} label_names for {num_classes} classes")
        if label_names is None and num_classes == len(CHEXPERT_LABELS):
            label_names = CHEXPERT_LABELS
        self.label_names = tuple(label_names) if label_names is not None else None

    # --- MXA-specific API ---------------------------------------------------------------------------
    def mxa_blocks(self) -> dict[str, MXABlock]:
        """The MXA blocks by the name of the EfficientViT block that holds them (``stages.1.blocks.0``)."""
        return hooks.mxa_blocks(self)

    def forward_with_rois(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits (B, num_classes) and ``{block name: (B, 4) boxes}`` (see :func:`mxa.forward_with_rois`)."""
        return hooks.forward_with_rois(self, x)

    # --- timm API, with input checks ----------------------------------------------------------------
    def set_input_size(self, img_size: int | tuple[int, int] | None = None) -> None:
        super().set_input_size(img_size)
        if img_size is not None:
            self.input_hw = to_2tuple(img_size)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        super().reset_classifier(num_classes, global_pool)
        if num_classes > 0:
            dev = self.head.linear.weight.device
            self.head = BatchSafeNormLinear(self.head_hidden_size, num_classes, drop=self.drop_rate).to(dev)
            self.head.train(self.training)
        if self.label_names is not None and len(self.label_names) != num_classes:
            self.label_names = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.in_chans, self.input_hw)
        if not self.training:  # warn once about badly prepared images (mxa.data.sanity)
            check_model_input(self, x)
        return super().forward_features(x)

    def forward_intermediates(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        _check_input(x, self.in_chans, self.input_hw)
        return super().forward_intermediates(x, *args, **kwargs)


def _resize_attention_biases(
    state_dict: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Attention biases (heads, positions) resized to the model's window (another image size), through
    timm's public LeViT table resize; the index buffers are the model's own."""
    out = {}
    for k, v in state_dict.items():
        if k.endswith("attention_bias_idxs"):
            continue
        if k.endswith("attention_biases") and k in target and v.shape != target[k].shape:
            v = resize_rel_pos_bias_table_levit(v.T, target[k].shape[::-1]).T.contiguous()
        out[k] = v
    return out


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: MultiLabelEfficientViT) -> dict:
    """Adapt a timm ``efficientvit_mX`` or an ``efficientvit_ml_mX`` state dict to ``model``.

    * unwraps ``{'model': ...}`` / ``{'state_dict': ...}`` checkpoints;
    * resizes attention biases for another image size (timm's own filter);
    * sums an RGB first conv to one channel when the model takes one (timm's ``adapt_input_conv``);
    * keeps the model's own initial values for what the file cannot provide: the MXA parameters of a
      baseline or ImageNet checkpoint, and a classifier of another size (ImageNet's 1000 classes).

    Anything else that does not match still fails the (strict) load.
    """
    for key in ("model", "state_dict"):
        if key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
    target = model.state_dict()
    state_dict = _resize_attention_biases(state_dict, target)

    conv_key = "patch_embed.conv1.conv.weight"
    if conv_key in state_dict and state_dict[conv_key].shape[1] != target[conv_key].shape[1]:
        w = state_dict[conv_key]
        # the base channel count is an argument from timm 1.0.21 on; RGB is what every timm version adapts
        state_dict[conv_key] = (
            adapt_input_conv(model.in_chans, w)
            if w.shape[1] == 3
            else adapt_input_conv(model.in_chans, w, w.shape[1])
        )

    for k in ("head.linear.weight", "head.linear.bias"):
        if k in state_dict and k in target and state_dict[k].shape != target[k].shape:
            state_dict[k] = target[k]
    for k, v in target.items():
        if k not in state_dict and (".mxa." in k or k.startswith("head.linear.")):
            state_dict[k] = v
    return state_dict


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> MultiLabelEfficientViT:
    out_indices = kwargs.pop("out_indices", (0, 1, 2))
    model = build_model_with_cfg(
        MultiLabelEfficientViT,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs,
    )
    if isinstance(model, MultiLabelEfficientViT):  # not a features_only wrapper
        # the cfg describes the model as built (timm's Hub export writes it): its input, not the default's
        h, w = model.input_hw
        model.pretrained_cfg = model.default_cfg = {
            **model.pretrained_cfg,
            "input_size": (model.in_chans, h, w),
            "pool_size": (math.ceil(h / 64), math.ceil(w / 64)),
        }
    return model


def _cfg(base: str, **kwargs: Any) -> dict[str, Any]:
    return {
        # The ImageNet weights of timm's own model: backbone only, the head and MXA start fresh.
        "hf_hub_id": f"timm/{base}.r224_in1k",
        "num_classes": len(CHEXPERT_LABELS),
        "label_names": CHEXPERT_LABELS,
        "input_size": (1, 224, 224),
        "mean": GRAY_MEAN,
        "std": GRAY_STD,
        "interpolation": "bicubic",
        "crop_pct": 1.0,
        "fixed_input_size": True,
        "pool_size": (4, 4),
        "first_conv": "patch_embed.conv1.conv",
        "classifier": "head.linear",
        "license": "mit",
        "description": "ImageNet-1k backbone of timm's EfficientViT; multi-label head and MXA untrained.",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {f"efficientvit_ml_m{i}.r224_in1k": _cfg(f"efficientvit_m{i}") for i in range(6)}
)

# Paper Table H.1 (identical to timm's efficientvit_m0..m5).
_ARCH: dict[str, dict[str, Any]] = {
    "m0": dict(embed_dim=(64, 128, 192), depth=(1, 2, 3), num_heads=(4, 4, 4), kernels=(5, 5, 5, 5)),
    "m1": dict(embed_dim=(128, 144, 192), depth=(1, 2, 3), num_heads=(2, 3, 3), kernels=(7, 5, 3, 3)),
    "m2": dict(embed_dim=(128, 192, 224), depth=(1, 2, 3), num_heads=(4, 3, 2), kernels=(7, 5, 3, 3)),
    "m3": dict(embed_dim=(128, 240, 320), depth=(1, 2, 3), num_heads=(4, 3, 4), kernels=(5, 5, 5, 5)),
    "m4": dict(embed_dim=(128, 256, 384), depth=(1, 2, 3), num_heads=(4, 4, 4), kernels=(7, 5, 3, 3)),
    "m5": dict(embed_dim=(192, 288, 384), depth=(1, 3, 4), num_heads=(3, 3, 4), kernels=(7, 5, 3, 3)),
}


def _factory(size: str, pretrained: bool, kwargs: dict[str, Any]) -> MultiLabelEfficientViT:
    args = dict(img_size=224, window_size=(7, 7, 7), **_ARCH[size])
    return _create(f"efficientvit_ml_{size}", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def efficientvit_ml_m0(pretrained: bool = False, **kwargs: Any) -> MultiLabelEfficientViT:
    """EfficientViT-MultiLabel M0 (2.2M parameters without MXA)."""
    return _factory("m0", pretrained, kwargs)


@register_model
def efficientvit_ml_m1(pretrained: bool = False, **kwargs: Any) -> MultiLabelEfficientViT:
    """EfficientViT-MultiLabel M1."""
    return _factory("m1", pretrained, kwargs)


@register_model
def efficientvit_ml_m2(pretrained: bool = False, **kwargs: Any) -> MultiLabelEfficientViT:
    """EfficientViT-MultiLabel M2."""
    return _factory("m2", pretrained, kwargs)


@register_model
def efficientvit_ml_m3(pretrained: bool = False, **kwargs: Any) -> MultiLabelEfficientViT:
    """EfficientViT-MultiLabel M3."""
    return _factory("m3", pretrained, kwargs)


@register_model
def efficientvit_ml_m4(pretrained: bool = False, **kwargs: Any) -> MultiLabelEfficientViT:
    """EfficientViT-MultiLabel M4."""
    return _factory("m4", pretrained, kwargs)


@register_model
def efficientvit_ml_m5(pretrained: bool = False, **kwargs: Any) -> MultiLabelEfficientViT:
    """EfficientViT-MultiLabel M5, the paper's model."""
    return _factory("m5", pretrained, kwargs)
