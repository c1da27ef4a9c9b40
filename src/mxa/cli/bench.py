"""``mxa bench``: parameters, FLOPs, latency, throughput and memory of MXA vs its baseline, side by side."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from mxa.cli._common import bounded, declare_io, write_json

__all__ = ["add_parsers"]


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="parameters, FLOPs, latency, throughput vs the baseline and timm, side by side",
        description=(
            "For each model, its variants in the same run: 'mxa' (the model mxa train builds by default: "
            "label ROIs), for our EfficientViT 'mxa-all' or 'mxa-first' (the same block in the layout mxa "
            "train does not build by default: every block of a stage, or the first only), 'mxa-box' "
            "(timm.create_model(name, mxa=True): the paper's single box), 'baseline' "
            "(ours with --no-mxa) and 'timm' (timm's own efficientvit_mX with 1 input channel and 14 outputs:"
            " the reference our baseline must match). Timings are interleaved (one repeat of each variant in "
            "turn) and reported as median [IQR]; a ratio to the baseline is the median of the per-repeat "
            "ratios, not a ratio of medians. FLOPs from torch's FlopCounterMode (MACs = FLOPs / 2). Also "
            "reported: the operators each MXA block dispatches in eager inference (each a kernel launch on a "
            "GPU) and, with the onnx runtimes, the ONNX graph nodes each block adds."
        ),
    )
    p.add_argument("--model", action="append", help="model name, repeatable (default efficientvit_ml_m5)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run (default cpu)")
    p.add_argument(
        "--batch-size", type=bounded(int, 1, 65536), default=32, help="images per batch (default 32)"
    )
    p.add_argument("--img-size", type=bounded(int, 32, 2048), default=224, help="input size (default 224)")
    p.add_argument(
        "--amp", default="none", choices=["none", "bf16", "fp16"], help="autocast dtype (default none)"
    )
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument(
        "--runtime",
        action="append",
        choices=["eager", "compile", "onnx", "onnx-static", "deterministic"],
        default=[],
        help="how to run every variant, repeatable, all timed in one interleaved run (default eager): eager; "
        "compile (torch.compile; variant keys 'mxa@compile'...); onnx (exported as mxa export writes it, "
        "BN fused and simplified, with a symbolic batch, in ONNX Runtime on the CPU with torch's thread "
        "count, inference only; needs the onnx extra); onnx-static (the same with the batch fixed to "
        "--batch-size, as mxa export --static-batch N writes it); deterministic (eager under "
        "torch.use_deterministic_algorithms, as mxa train --deterministic runs: the separable crop)",
    )
    p.add_argument("--compile", action="store_true", help="the same as --runtime compile alone")
    p.add_argument(
        "--repeats", type=bounded(int, 1), default=10, help="interleaved timed repeats (default 10)"
    )
    p.add_argument(
        "--warmup", type=bounded(int, 0), default=3, help="untimed warm-up calls of each variant (default 3)"
    )
    p.add_argument("--no-train", action="store_true", help="skip the train-step timing")
    p.add_argument(
        "--crop-method",
        action="append",
        choices=["grid_sample", "separable"],
        default=[],
        help="also time our MXA model with this ROI-crop method (variant 'mxa-<method>'); repeatable",
    )
    p.add_argument("--json", default=None, help="write every number, with device and versions, to this file")
    declare_io(p, outputs=("json",))
    p.set_defaults(func=cmd_bench)


def cmd_bench(ns: argparse.Namespace) -> int:
    from mxa.bench import run_bench

    runtimes = ns.runtime + (["compile"] if ns.compile else [])
    rep = run_bench(
        ns.model or ["efficientvit_ml_m5"],
        device=ns.device,
        batch_size=ns.batch_size,
        img_size=ns.img_size,
        amp=ns.amp,
        channels_last=ns.channels_last,
        repeats=ns.repeats,
        warmup=ns.warmup,
        train_step=not ns.no_train,
        crop_methods=ns.crop_method,
        runtimes=runtimes,
    )
    print_table(rep)
    if ns.json:
        print(f"\nresults: {write_json(ns.json, rep)}")
    return 0


def print_table(rep: Mapping[str, Any]) -> None:
    print(
        f"\n{rep['device']}, torch {rep['torch']}, timm {rep['timm']}, {rep['threads']} threads, "
        f"batch {rep['batch_size']}, {rep['img_size']}px, amp {rep['amp']}"
    )
    head = (
        f"{'model':<20}{'variant':<24}{'params':>10}{'GFLOPs':>9}{'GMACs':>8}{'latency ms [IQR]':>26}"
        f"{'img/s':>9}{'train ms':>10}"
    )
    print(head + "\n" + "-" * len(head))
    for name, r in rep["results"].items():
        for k, v in r["variants"].items():
            inf = v["inference"]
            tr = v.get("train_step", {}).get("median_ms")
            tr_txt = "-" if tr is None else f"{tr:.1f}"
            lat = f"{inf['median_ms']:.2f} [{inf['p25_ms']:.2f}-{inf['p75_ms']:.2f}]"
            print(
                f"{name:<20}{k:<24}{v['params'] / 1e6:>9.2f}M{v['gflops']:>9.3f}{v['gmacs']:>8.3f}  {lat:>24}"
                f"{inf['images_per_s']:>9.0f}{tr_txt:>10}"
            )
        for k, rr in r["ratios"].items():
            extra = f", train step x{rr['train_step']:.3f}" if "train_step" in rr else ""
            nodes = rr.get("onnx_nodes_per_block")
            if nodes:
                extra += f", ONNX nodes per block +{nodes['exported']:.0f} (+{nodes['optimized']:.0f} in ORT)"
            print(
                f"{'':<20}{k}: params x{rr['params']:.4f}, FLOPs x{rr['flops']:.4f}, latency "
                f"x{rr['latency']:.3f}{extra}"
            )
        _print_operators(name, r["variants"])


def _print_operators(name: str, variants: Mapping[str, Any]) -> None:
    """One line per variant with MXA blocks: the operators a block dispatches in eager inference."""
    seen = set()
    for k, v in variants.items():
        ops = v.get("operators_per_block")
        base = k.split("@")[0]
        if not ops or base in seen:
            continue
        seen.add(base)
        every = [o["operators"] for o in ops.values()]
        compute = [o["compute"] for o in ops.values()]
        print(
            f"{'':<20}{base}: {len(ops)} MXA block(s), {min(every)}-{max(every)} operators each in eager "
            f"inference ({min(compute)}-{max(compute)} not views)"
        )
