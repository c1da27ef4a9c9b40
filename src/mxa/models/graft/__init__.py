"""MXA on any backbone: graft :class:`MXABlock` s into timm, torchvision and torchxrayvision models.

:func:`add_mxa` walks a model, finds the blocks it knows (a registry of block type -> insertion rule) and
puts an MXA block in parallel with each selected block's residual branch or attention, in place:

======================  =====================================================  ==================
family                  where the MXA block goes (``stream`` = what it reads)  default ``where``
======================  =====================================================  ==================
resnet (timm, tv, xrv)  ``act(branch(x) + s + mxa(s))``, ``s`` the shortcut    last block / stage
densenet (timm, xrv)    ``cat(x + mxa(x), new features)`` per dense block      every dense block
convnext                ``x + branch(x) + mxa(x)``                             last block / stage
efficientnet/mobilenet  ``x + branch(x) + mxa(x)`` (blocks with a skip only)   last block / stage
vit / deit              ``attn(n) + mxa(n)`` on the patch-token grid of n      every block
swin                    ``attn(n) + mxa(n)`` on the whole (B, H, W, C) map     every block
efficientvit_mit (B)    ``x + context(x) + mxa(x)`` (the LiteMLA module)       every block
efficientvit_msra       ``x + attn(x) + mxa(x)`` (the local window attention)  every block
======================  =====================================================  ==================

``n`` is the attention's own (normalised) input. DenseNet has no residual sum: its concatenation passes the
block input through unchanged, so that identity part is where ``mxa(x)`` joins (the dense layers of the
block do not see it, the next transition does), rather than after the transition, which would put MXA in
series, not in parallel.

Every rule keeps the original module names (a block's class is swapped for a subclass of it, or its
shortcut for a module that holds the same children) and adds only ``.mxa.`` keys; with MXA's zero-init
``scale`` the grafted model computes exactly what the original does until the first update.
"""

from mxa.models.graft.api import add_mxa, known_blocks
from mxa.models.graft.mechanism import MXAShortcut
from mxa.models.graft.registry import BlockRule, register_block
from mxa.models.hooks import forward_with_rois, mxa_blocks

__all__ = [
    "BlockRule",
    "MXAShortcut",
    "add_mxa",
    "forward_with_rois",
    "known_blocks",
    "mxa_blocks",
    "register_block",
]
