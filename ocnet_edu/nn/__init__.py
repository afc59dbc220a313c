"""The paper's mathematics as PyTorch modules and functions.

=================  =====================================================================
module             what
=================  =====================================================================
``layers``         ``conv → BN → ReLU`` and the input check every module shares
``attention``      self-attention (SA), Eq. 4 and Eq. 10–11
``isa``            interlaced sparse self-attention (ISA), Eq. 12–21 and Algorithm 1
``reference``      a line-by-line transcription of Algorithm 1 (to check ``isa`` against)
``relation``       the permutation P, block-diagonal Wᵍ/Wˡ and the dense W of Eq. 9, Algorithm 2
``context_sets``   the context sets of PPM, ASPP and object context (Eq. 1–3, Eq. 22)
``residual``       ISA as a residual block for any backbone (Sec. 5)
``complexity``     the FLOPs of SA and ISA: Eq. 24–26 (App. F) and the best grouping
``zoo``            minimal axial, window and OCR attention (what came after, chapter 15)
``zoo_complexity`` the FLOPs of the related work's mechanisms and of ``zoo`` (chapter 15)
``reach``          supports measured by back-propagation; path lengths in attention steps
=================  =====================================================================
"""

from ocnet_edu.nn.attention import SelfAttention, attend
from ocnet_edu.nn.isa import InterlacedSparseSelfAttention
from ocnet_edu.nn.layers import check_input, conv_bn_relu
from ocnet_edu.nn.residual import ResidualISABlock

__all__ = [
    "InterlacedSparseSelfAttention",
    "ResidualISABlock",
    "SelfAttention",
    "attend",
    "check_input",
    "conv_bn_relu",
]
