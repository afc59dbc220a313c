"""One factory for every context module: ``build_context_module(name, in_channels, **options)``.

The names are the rows of Tables 2–5 of Y. Yuan et al., "OCNet: Object Context for Semantic
Segmentation", IJCV 2021. Each name fixes a class and, for the OCNet heads, the OCP kind; the
remaining constructor arguments of that class are the accepted ``options``. Anything else is an
error that names the offending option — no ``**kwargs`` swallow a typo.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from .asp_oc import ASPOC
from .aspp import ASPP
from .base_oc import BaseOC
from .baseline import NoContext
from .cgnl import CGNLHead
from .danet import DANetHead
from .efficient_attention import EfficientAttentionHead
from .ppm import PPM
from .pyramid_oc import PyramidOC
from .rcca import RCCAHead

__all__ = ["CONTEXT_MODULES", "CONTEXT_MODULE_NAMES", "context_module_options", "build_context_module"]

#: name → (class, arguments fixed by the name)
CONTEXT_MODULES: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "none": (NoContext, {}),
    "base_oc_sa": (BaseOC, {"ocp": "sa"}),
    "base_oc_isa": (BaseOC, {"ocp": "isa"}),
    "pyramid_oc_sa": (PyramidOC, {"ocp": "sa"}),
    "pyramid_oc_isa": (PyramidOC, {"ocp": "isa"}),
    "asp_oc_sa": (ASPOC, {"ocp": "sa"}),
    "asp_oc_isa": (ASPOC, {"ocp": "isa"}),
    "ppm": (PPM, {}),
    "aspp": (ASPP, {}),
    "danet": (DANetHead, {}),
    "rcca": (RCCAHead, {}),
    "cgnl": (CGNLHead, {}),
    "efficient_attention": (EfficientAttentionHead, {}),
    "sa_2x": (BaseOC, {"ocp": "sa", "ocp_downsample": 2}),
}

CONTEXT_MODULE_NAMES = tuple(CONTEXT_MODULES)


def _check_name(name: str) -> None:
    if name not in CONTEXT_MODULES:
        raise ValueError(f"unknown context module {name!r}; valid names: {', '.join(CONTEXT_MODULE_NAMES)}")


def context_module_options(name: str) -> dict[str, Any]:
    """The options ``name`` accepts, with their defaults.

    Args:
        name: one of :data:`CONTEXT_MODULE_NAMES`.
    """
    _check_name(name)
    cls, fixed = CONTEXT_MODULES[name]
    parameters = inspect.signature(cls.__init__).parameters
    return {
        key: parameter.default
        for key, parameter in parameters.items()
        if key not in {"self", "in_channels", *fixed}
    }


def build_context_module(name: str, in_channels: int = 2048, **options: Any) -> nn.Module:
    """Build a context module by name.

    Args:
        name: one of :data:`CONTEXT_MODULE_NAMES` (``"none"``, ``"base_oc_sa"``, ...).
        in_channels: channels of the backbone map (2048 for dilated ResNet-101).
        **options: constructor arguments of the module (see :func:`context_module_options`);
            arguments that the name fixes (e.g. ``ocp`` of ``"base_oc_isa"``) are not options.

    Returns:
        A module mapping ``[B, in_channels, H, W]`` to ``[B, module.out_channels, H, W]``.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names).
        TypeError: an option the module does not accept (the message names it and lists the
            valid options).
    """
    _check_name(name)
    valid = context_module_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown} for context module {name!r}; valid options: {sorted(valid)}"
        )
    cls, fixed = CONTEXT_MODULES[name]
    return cls(in_channels, **fixed, **options)
