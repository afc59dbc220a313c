"""Keeping input sizes symbolic while ``torch.export`` traces a model (for ONNX with dynamic H, W).

``torch.export`` runs the model once on an example and records the operations with *symbolic*
sizes. Two things in eager code silently fix the graph to the example's size class:

* a Python ``if`` on a size (ISA pads only when ``H`` is not a multiple of ``P_h``; Pyramid-OC
  splits a map into bands whose number depends on ``H mod k``): the tracer takes the example's
  branch and records a guard that the ONNX graph does not keep;
* a view whose contiguity depends on the sizes (``x[..., :h, :w].contiguous()`` is a no-op when the
  crop removes nothing): the tracer asks "is it contiguous?" for the example and keeps the answer.

The modules that have such code ask :func:`exporting` and then take a branch-free path: pad by
``Q·P − H ≥ 0`` rows even when that is zero, walk the regions one by one, and crop with
:func:`crop`, a gather instead of a view. Eager runs keep their fast paths.
"""

from __future__ import annotations

import torch

__all__ = ["exporting", "crop"]


def exporting() -> bool:
    """True while ``torch.export`` (also under ``torch.onnx.export(dynamo=True)``) traces the model."""
    return torch.compiler.is_exporting()


def crop(x: torch.Tensor, rows: tuple, cols: tuple) -> torch.Tensor:
    """``x[..., rows[0]:rows[1], cols[0]:cols[1]]`` as a new tensor (a gather of rows and columns).

    Args:
        x: ``[..., H, W]``.
        rows, cols: ``(start, stop)`` with ``0 ≤ start ≤ stop ≤ H`` (resp. ``W``); ints or
            symbolic sizes.

    Returns:
        ``[..., rows[1] − rows[0], cols[1] − cols[0]]``, contiguous. Unlike a slice it has no
        strides to inspect, so tracing it records no guard on the sizes; unlike ``slice_copy`` it
        has an ONNX translation (``Gather``).
    """
    rows, cols = (torch.arange(start, stop, device=x.device) for start, stop in (rows, cols))
    return x.index_select(-2, rows).index_select(-1, cols)
