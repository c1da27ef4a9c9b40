"""Training, evaluation, metrics, checkpoints and reports (``mxa train`` / ``eval`` / ``report`` / ``ablate``).

Submodules are imported where used, so ``import mxa`` stays light.
"""
