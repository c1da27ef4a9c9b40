"""Data helpers: ``mxa cache-teacher``, ``mxa occlusion-boxes``, ``mxa make-phantom``, ``mxa preresize``."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from mxa.cli._common import bounded, declare_io
from mxa.cli.config import add_config_flags

__all__ = ["add_parsers"]


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "cache-teacher",
        help="compute teacher logits once over the training set (safetensors)",
        description=(
            "Run a teacher over the training images a `mxa train` run with the same --data, --model, "
            "--img-size, "
            "--train-samples, --seed and --policy sees (in the evaluation view, without augmentation), and "
            "save its "
            "logits keyed by image id. Train with --teacher cache:OUTPUT; the run checks the cache's image "
            "size "
            "and policy against its own."
        ),
    )
    # the settings a run's cache must match: the same flags (help, checks) as `mxa train`
    add_config_flags(
        p,
        (
            "teacher",
            "data",
            "model",
            "img_size",
            "policy",
            "train_samples",
            "seed",
            "batch_size",
            "device",
            "trust_pickle",
        ),
        teacher="densenet121-res224-chex",
        batch_size=64,
    )
    p.add_argument(
        "--output", required=True, help="the .safetensors file to write; train with --teacher cache:<file>"
    )
    declare_io(p, inputs=("teacher", "data"), outputs=("output",))
    p.set_defaults(func=cmd_cache_teacher)
    _add_occlusion_boxes(sub)

    p = sub.add_parser(
        "make-phantom",
        help="write a phantom set in the CheXpert layout (PNGs + train.csv/valid.csv)",
        description="Write phantom X-rays as PNGs with CheXpert-style CSVs and boxes_<split>.json, for "
        "--data chexpert:<folder>.",
    )
    p.add_argument(
        "--output", required=True, help="folder to create (the set goes to OUTPUT/CheXpert-v1.0-small)"
    )
    p.add_argument("--train", type=bounded(int, 1), default=200, help="training images (default 200)")
    p.add_argument("--valid", type=bounded(int, 1), default=50, help="validation images (default 50)")
    p.add_argument("--img-size", type=bounded(int, 32, 2048), default=224, help="image size (default 224)")
    p.add_argument("--seed", type=bounded(int, 0), default=0, help="seed (default 0)")
    declare_io(p, outputs=("output",), folders=("output",))
    p.set_defaults(func=cmd_make_phantom)

    p = sub.add_parser(
        "preresize",
        help="copy CheXpert with smaller images, once (decoding 3000px JPEGs is slow)",
        description="Copy a CheXpert folder's CSVs and resize every image so its shorter side is --size "
        "pixels.",
    )
    p.add_argument("--src", required=True, help="the CheXpert-v1.0 (or -small) folder with train.csv")
    p.add_argument("--dst", required=True, help="the folder to write (CSVs copied, images resized)")
    p.add_argument(
        "--size", type=bounded(int, 32, 4096), default=320, help="shorter side in pixels (default 320)"
    )
    p.add_argument("--workers", type=bounded(int, 1, 256), default=8, help="processes (default 8)")
    declare_io(p, inputs=("src",), outputs=("dst",), folders=("dst",))
    p.set_defaults(func=cmd_preresize)


def _add_occlusion_boxes(sub: Any) -> None:
    from mxa.data.labels import POLICIES

    p = sub.add_parser(
        "occlusion-boxes",
        help="box the training images' findings by occlusion of a run trained on image labels (--box-file)",
        description=(
            "For every label each training image has (No Finding aside), find where hiding part of the image "
            "lowers the checkpoint's probability of it most (occlusion, coarse to fine: about 130 forward "
            "passes per label; mxa.viz.cam.occlusion_boxes) and box that region; write the boxes as a box "
            "file. Then train again with `mxa train --box-loss 1 --box-file OUTPUT`: the MXA crops learn "
            "where the findings are from image labels alone (docs/localization.md). The images are the "
            "training images of the checkpoint's run (its --data, --train-samples, --seed, --policy), in "
            "the evaluation view, unless given."
        ),
    )
    p.add_argument("--checkpoint", required=True, help="a run of `mxa train` on image labels (RUN/last.pt)")
    p.add_argument("--output", required=True, help="the box file to write (JSON)")
    p.add_argument(
        "--data", default=None, help="the images to box, as `mxa train --data` (default: the run's)"
    )
    p.add_argument(
        "--train-samples",
        type=bounded(int, 1),
        default=None,
        help="phantom training images (default: the run's)",
    )
    p.add_argument("--seed", type=bounded(int, 0), default=None, help="the run's seed (default: the run's)")
    p.add_argument(
        "--policy", choices=POLICIES, default=None, help="uncertain CheXpert labels (default: the run's)"
    )
    p.add_argument(
        "--fraction",
        type=bounded(float, 0.0, 0.99),
        default=0.5,
        help="where a box's edges lie on the finer occlusion map, from its mean (0) to its peak (1) "
        "(default 0.5, the half maximum)",
    )
    p.add_argument(
        "--min-drop",
        type=bounded(float, 1e-6, 1.0),
        default=0.05,
        help="no box for a label whose probability no hidden region lowers by this much (> 0): the model "
        "does not see that finding (default 0.05)",
    )
    p.add_argument(
        "--batch-size",
        type=bounded(int, 1),
        default=256,
        help="occluded images per forward pass (default 256)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    declare_io(p, inputs=("checkpoint", "data"), outputs=("output",))
    p.set_defaults(func=cmd_occlusion_boxes)


def cmd_occlusion_boxes(ns: argparse.Namespace) -> int:
    from mxa.train.boxes import occlusion_box_file

    images = {k: getattr(ns, k) for k in ("data", "train_samples", "seed", "policy")}
    kwargs = dict(fraction=ns.fraction, min_drop=ns.min_drop, batch_size=ns.batch_size)
    done = occlusion_box_file(ns.checkpoint, ns.output, images, device=ns.device, **kwargs)
    run, table = done["run"], done["table"]
    if float(run.get("box_loss", 0.0)) > 0:
        source = f"the boxes of --box-file {run['box_file']}" if run.get("box_file") else "box labels"
        print(f"note: the checkpoint's run trained on {source} (--box-loss)", file=sys.stderr)
    n = sum(len(v) for v in table.values())
    print(f"{n} boxes on {len(table)} of {done['images']} training images -> {ns.output}")
    given = {k: v for k, v in done["settings"].items() if v is not None}  # the run's images, again
    words = ["mxa", "train", *[w for k, v in given.items() for w in (f"--{k.replace('_', '-')}", str(v))]]
    print(f"train on them: {shlex.join([*words, '--box-loss', '1', '--box-file', ns.output])} ...")
    return 0


def cmd_cache_teacher(ns: argparse.Namespace) -> int:
    from mxa.distill.cache import cache_teacher_logits
    from mxa.files.spec import ModelSpec

    student = ModelSpec.for_training(ns.model, ns.img_size, mxa=False).build(source="--model")
    cache = cache_teacher_logits(
        ns.teacher,
        student,
        data=ns.data,
        policy=ns.policy,
        train_samples=ns.train_samples,
        seed=ns.seed,
        batch_size=ns.batch_size,
        device=ns.device,
        trust_pickle=ns.trust_pickle,
        output=ns.output,
    )
    print(f"teacher logits of {len(cache)} images -> {ns.output}")
    return 0


def cmd_make_phantom(ns: argparse.Namespace) -> int:
    from mxa.data.writer import write_phantom_chexpert

    base = write_phantom_chexpert(
        ns.output,
        n_train=ns.train,
        n_valid=ns.valid,
        image_size=ns.img_size,
        seed=ns.seed,
        overwrite=ns.overwrite,
    )
    print(f"phantom CheXpert set written to {base} (use --data chexpert:{base})")
    return 0


def cmd_preresize(ns: argparse.Namespace) -> int:
    from mxa.data.preresize import PreresizeError, preresize_chexpert
    from mxa.utils.outputs import same_file

    if same_file(ns.src, ns.dst):
        raise ValueError(f"--dst {ns.dst} is the input --src: resizing in place would replace the originals")
    try:
        n = preresize_chexpert(ns.src, ns.dst, ns.size, ns.workers)
    except PreresizeError as e:
        for failure in e.failures:
            print(f"failed: {failure}", file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{n} images resized into {ns.dst} (use --data chexpert:{ns.dst})")
    return 0
