"""Scores: classification (AUC with bootstrap CIs, calibration), localization of the MXA boxes, run reports.

Submodules are imported where used, so ``import mxa`` stays light.
"""
