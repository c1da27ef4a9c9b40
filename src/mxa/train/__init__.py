"""Training: ``TrainConfig`` (every ``mxa train`` flag), the loop, its resumable state, DDP and experiments.

Submodules are imported where used, so ``import mxa`` stays light.
"""
