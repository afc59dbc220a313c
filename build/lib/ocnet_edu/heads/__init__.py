"""Context modules: the OCNet heads (Base-OC, Pyramid-OC, ASP-OC) and the baselines of Tables 2–5.

Y. Yuan, L. Huang, J. Guo, C. Zhang, X. Chen, J. Wang, "OCNet: Object Context for Semantic
Segmentation", IJCV 2021. Every module maps the backbone map ``[B, C_in, H, W]`` to the context
map the classifier sees, ``[B, module.out_channels, H, W]``. Build one by name with
:func:`build_context_module`; count its FLOPs with :func:`ocnet_edu.profiling.count_gflops`. The heads' parts share
one naming scheme (``reduce``, ``ocp``, ``refine``, ``fuse``; see :mod:`ocnet_edu.heads.base`).
"""

from .asp_oc import ASPOC
from .aspp import ASPP, AtrousBranches, ImagePooling
from .base import ContextHead
from .base_oc import BaseOC
from .baseline import NoContext
from .cgnl import CGNLBlock, CGNLHead
from .danet import ChannelAttention, DANetHead, PositionAttention
from .efficient_attention import EfficientAttention, EfficientAttentionHead
from .factory import CONTEXT_MODULE_NAMES, CONTEXT_MODULES, build_context_module, context_module_options
from .ocp import OCP_KINDS, ContextOutput, ObjectContextHead, build_ocp, run_ocp
from .ppm import PPM
from .pyramid_oc import PyramidOC, map_regions, region_index_map, region_sizes
from .rcca import CrissCrossAttention, RCCAHead

__all__ = [
    "ASPOC",
    "ASPP",
    "AtrousBranches",
    "BaseOC",
    "CGNLBlock",
    "CGNLHead",
    "CONTEXT_MODULES",
    "CONTEXT_MODULE_NAMES",
    "ChannelAttention",
    "ContextHead",
    "ContextOutput",
    "CrissCrossAttention",
    "DANetHead",
    "EfficientAttention",
    "EfficientAttentionHead",
    "ImagePooling",
    "NoContext",
    "OCP_KINDS",
    "ObjectContextHead",
    "PPM",
    "PositionAttention",
    "PyramidOC",
    "RCCAHead",
    "build_context_module",
    "build_ocp",
    "context_module_options",
    "map_regions",
    "region_index_map",
    "region_sizes",
    "run_ocp",
]
