"""0.2's public names still import from their 0.2 paths, with a DeprecationWarning naming the new home."""

from __future__ import annotations

import importlib
import warnings

import pytest

#: Every public name of 0.2's modules that 0.3 moved (their ``__all__`` at the 0.2.0 release).
NAMES_0_2 = {
    "mxa.engine.train": (
        "CheckpointSaver",
        "NonFiniteLossError",
        "TrainConfig",
        "model_spec",
        "schedule_phases",
        "train",
    ),
    "mxa.engine.evaluate": (
        "evaluate_model",
        "predict",
        "roi_localization",
        "summarize_localization",
    ),
    "mxa.engine.checkpoint": (
        "CorruptCheckpointError",
        "atomic_save",
        "capture_rng_state",
        "load_checkpoint",
        "load_model_from_checkpoint",
        "restore_rng_state",
        "save_checkpoint",
    ),
    "mxa.engine.config": (
        "ConfigError",
        "TrainConfig",
    ),
    "mxa.engine.data": (
        "SCHEMES",
        "DataSpec",
        "IndexedDataset",
        "ResumableSampler",
        "build_datasets",
        "build_eval_dataset",
        "parse_data_spec",
    ),
    "mxa.engine.metrics": (
        "auroc",
        "bootstrap_ci",
        "brier_score",
        "calibration_metrics",
        "compute_metrics",
        "expected_calibration_error",
    ),
    "mxa.engine.box_supervision": (
        "BoxCapture",
        "best_match_giou_loss",
        "box_area",
    ),
    "mxa.engine.calibration": (
        "ThresholdSpec",
        "choose_thresholds",
        "decision_report",
        "fit_calibration",
        "operating_points",
        "parse_threshold_spec",
    ),
    "mxa.engine.distributed": (
        "agree",
        "dist_info",
        "gather_predictions",
        "process_group",
    ),
    "mxa.engine.experiment": (
        "PAPER_VARIANTS",
        "Experiment",
        "Variant",
        "run_experiment",
    ),
    "mxa.engine.localization": (
        "roi_localization",
        "summarize_localization",
    ),
    "mxa.engine.report": (
        "aggregate_runs",
        "mean_ci",
        "read_run",
        "run_ablation",
    ),
    "mxa.engine.run_folder": (
        "RUN_FILES",
        "RunFolderError",
        "prepare_run_folder",
        "trim_metrics",
    ),
    "mxa.engine.sources": (
        "MultiSet",
        "SetBundle",
        "build_eval_set",
        "build_train_val",
        "label_summary",
        "metrics_by_source",
        "weighted_order",
    ),
    "mxa.engine.teacher_cache": ("cache_teacher_logits",),
    "mxa.export": (
        "ONNX_METADATA_KEYS",
        "export_onnx",
        "export_safetensors",
        "load_exported",
        "onnx_metadata",
        "save_with_decision",
        "verify_onnx",
    ),
    "mxa.viz_cam": (
        "cam_box_agreement",
        "draw_gradcam",
        "gradcam",
        "plot_gradcam_overlay",
        "resolve_label",
    ),
    "mxa.viz_calibration": (
        "plot_reliability_diagram",
        "reliability_bins",
    ),
    "mxa.models.loading": (
        "ALLOWED_MODEL_KWARGS",
        "PREPROCESSING",
        "ModelSpec",
        "attach_decision_rule",
        "load_exported",
        "load_model",
        "load_model_from_checkpoint",
    ),
    "mxa.models.decision": (
        "CALIBRATION_METHODS",
        "DecisionRule",
        "get_decision_rule",
    ),
    "mxa.utils.checkpoint": (
        "CorruptCheckpointError",
        "load_checkpoint",
        "save_checkpoint",
        "tensor_digest",
    ),
    "mxa.distill.losses": (
        "DEFAULT_MAX_POS_WEIGHT",
        "DistillationLoss",
        "SoftKDLoss",
        "class_balanced_pos_weight",
        "masked_bce_with_logits",
    ),
}


@pytest.mark.parametrize("module", sorted(NAMES_0_2))
def test_every_0_2_name_imports_from_its_0_2_path(module: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mod = importlib.import_module(module)
        for name in NAMES_0_2[module]:
            value = getattr(mod, name)  # from module import name
            assert value is not None, f"{module}.{name}"
    # the new home is named, never a bare "deprecated"
    assert all("0.3" in str(w.message) for w in caught if issubclass(w.category, DeprecationWarning))


def test_a_moved_name_warns_with_its_new_home() -> None:
    import mxa.engine.checkpoint as old
    from mxa.files.checkpoint import save_checkpoint

    with pytest.warns(DeprecationWarning, match="mxa.files.checkpoint.save_checkpoint"):
        assert old.atomic_save is save_checkpoint
    with pytest.warns(DeprecationWarning, match="mxa.files.load.load_model_from_checkpoint"):
        from mxa.engine.checkpoint import load_model_from_checkpoint  # noqa: F401
