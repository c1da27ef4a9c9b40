"""Box labels for ``mxa train --box-file`` without box labels: occlusion of a run trained on image labels
(``mxa occlusion-boxes``; docs/localization.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mxa.train.config import TrainConfig, stored_settings

__all__ = ["occlusion_box_file"]


def occlusion_box_file(
    checkpoint: str | Path,
    output: str | Path,
    images: dict[str, Any] | None = None,
    device: str = "auto",
    progress: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """Write ``output``, a box file of the training images of the run that wrote ``checkpoint``, by
    :func:`mxa.viz.cam.occlusion_box_table` of its model (BN-fused; ``mxa occlusion-boxes``).

    Args:
        checkpoint: a checkpoint of ``mxa train`` (its stored settings name the training images).
        output: the JSON file to write (atomically).
        images: ``data``, ``train_samples``, ``seed``, ``policy`` to use instead of the run's.
        device: where the model runs.
        progress: a progress bar.
        kwargs: passed to :func:`mxa.viz.cam.occlusion_boxes` (``fraction``, ``min_drop``, ``batch_size``).

    Returns:
        ``settings`` (the four used), ``run`` (the run's stored settings), ``images`` (how many),
        ``table`` (what was written).

    Raises:
        ValueError: the checkpoint is not ours, or records no settings and ``images`` lacks data and seed.
    """
    import json

    from timm.utils import reparameterize_model

    from mxa.data.combine import build_datasets
    from mxa.files.checkpoint import TrainCheckpoint
    from mxa.files.load import load_model
    from mxa.utils.files import atomic_write_text
    from mxa.utils.runtime import resolve_device
    from mxa.viz.cam import occlusion_box_table

    try:
        stored = TrainCheckpoint.load(checkpoint).config
    except ValueError as e:
        raise ValueError(
            f"{e}: --checkpoint must be a checkpoint of `mxa train` (RUN/last.pt or best.pt), whose run "
            "names the training images"
        ) from None
    given = {k: v for k, v in (images or {}).items() if v is not None}
    if not stored and not {"data", "seed"} <= set(given):
        raise ValueError(
            f"{checkpoint} records no run settings (written before mxa 0.2): give the training images "
            "with --data and --seed (and --train-samples for phantoms)"
        )
    run, defaults = stored_settings(stored), TrainConfig()
    names = ("data", "train_samples", "seed", "policy")
    settings = {k: given.get(k, run.get(k, getattr(defaults, k))) for k in names}
    model = load_model(checkpoint).eval()
    train_ds, _ = build_datasets(
        settings["data"],
        model,
        policy=settings["policy"],
        train_samples=settings["train_samples"],
        val_samples=1,
        seed=settings["seed"],
        rand_augment=None,
        augment=False,
        describe_validation=False,
    )
    fused = reparameterize_model(model).to(resolve_device(device))  # the same logits, faster
    table = occlusion_box_table(fused, train_ds, progress=progress, **kwargs)
    atomic_write_text(Path(output), json.dumps(table))
    return {"settings": settings, "run": run, "images": len(train_ds), "table": table}
