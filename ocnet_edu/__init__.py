"""ocnet_edu — object context, self-attention and interlaced sparse self-attention (OCNet).

The paper: Y. Yuan, L. Huang, J. Guo, C. Zhang, X. Chen, J. Wang, "OCNet: Object Context for
Semantic Segmentation", IJCV 2021. Equation numbers in docstrings are the paper's.

Sub-packages (see ``docs/ARCHITECTURE.md``): :mod:`ocnet_edu.nn` (the paper's mathematics),
:mod:`ocnet_edu.heads` (context modules), :mod:`ocnet_edu.backbones`, :mod:`ocnet_edu.data`,
:mod:`ocnet_edu.engine` (training, evaluation, prediction), :mod:`ocnet_edu.zoo` (trained
weights), :mod:`ocnet_edu.experiments` (the book's measurements).
"""

from ocnet_edu import backbones, heads, nn, scale
from ocnet_edu.model import OCNet, OCNetOutput
from ocnet_edu.nn import InterlacedSparseSelfAttention, SelfAttention
from ocnet_edu.version import __version__, require_version

__all__ = [
    "InterlacedSparseSelfAttention",
    "OCNet",
    "OCNetOutput",
    "SelfAttention",
    "backbones",
    "heads",
    "nn",
    "require_version",
    "scale",
]
