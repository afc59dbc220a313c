"""ocnet_edu — object context, self-attention and interlaced sparse self-attention (OCNet).

The paper: Y. Yuan, L. Huang, J. Guo, C. Zhang, X. Chen, J. Wang, "OCNet: Object Context for
Semantic Segmentation", IJCV 2021. Equation numbers in docstrings are the paper's.
"""

from .attention import SelfAttention, attend, conv_bn_relu
from .isa import InterlacedSparseSelfAttention
from . import backbones, context_sets, heads, relation, scale
from .model import OCNet, OCNetOutput

__version__ = "0.1.0"

__all__ = [
    "SelfAttention",
    "InterlacedSparseSelfAttention",
    "OCNet",
    "OCNetOutput",
    "backbones",
    "attend",
    "conv_bn_relu",
    "context_sets",
    "heads",
    "relation",
    "scale",
]
