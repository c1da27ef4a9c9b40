"""Data: CheXpert labels and dataset, the built-in phantom chest X-rays, transforms."""

from .labels import CHEXPERT_LABELS, COMPETITION_LABELS, POLICIES, apply_policy

__all__ = ["CHEXPERT_LABELS", "COMPETITION_LABELS", "POLICIES", "apply_policy"]
