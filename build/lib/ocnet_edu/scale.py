"""The one switch between CPU-small and GPU-full runs.

Chapters, tests, benchmarks and scripts all read the scale from here, so a reader changes it in
one place: the environment variable ``OCNET_SCALE`` (``small`` or ``full``). When it is unset the
scale is ``full`` if a CUDA device is present and ``small`` otherwise. This module only *reads*
the environment; it never sets it.
"""

from __future__ import annotations

import os
from typing import TypeVar

import torch

T = TypeVar("T")

SCALES = ("small", "full")
ENV_VAR = "OCNET_SCALE"


def scale() -> str:
    """Return ``"small"`` or ``"full"`` (see the module docstring)."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if not value:
        return "full" if torch.cuda.is_available() else "small"
    if value not in SCALES:
        raise ValueError(f"{ENV_VAR}={value!r} is not a scale; use one of {SCALES}")
    return value


def pick(small: T, full: T) -> T:
    """Return ``small`` at CPU scale and ``full`` at GPU scale."""
    return full if scale() == "full" else small


def default_device() -> torch.device:
    """The device chapters and scripts use: CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
