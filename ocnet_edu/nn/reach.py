"""Which pixels a module lets each output pixel depend on, and how many attention steps it takes.

The *support* of a mechanism is the boolean pattern of the entries of W it allows. It is measured
here from the module itself, by back-propagation: output pixel ``i`` depends on input pixel ``j``
when the gradient of (a random channel mix of) ``y[:, i]`` with respect to ``x[:, j]`` is nonzero.
Entries a mechanism never computes, or masks before its softmax, have exactly zero gradient;
the others are nonzero almost surely for random weights and inputs (run in float64, so that no
softmax weight underflows).

A mechanism is a sequence of attention *steps* (ISA: global, local; RCCA with recurrence 2: the
same criss-cross step twice; axial: rows, columns). With each step's support ``S_t`` (``[N, N]``,
``S_t[i, j]``: output ``i`` of the step depends on its input ``j``), pixel ``j`` reaches pixel
``i`` after ``t`` steps when ``(S_t ⋯ S_1)[i, j]`` is true (boolean matrix product). The *path
length* is the number of steps after which every pixel reaches every other.

Pixels are in raster order, ``i = h·W + w``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from einops import rearrange

__all__ = ["dependency_support", "hop_distances", "path_length", "reach"]


def dependency_support(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``[H·W, H·W]`` bool: ``[i, j]`` true when output pixel ``i`` of ``fn(x)`` depends on input pixel ``j``.

    Args:
        fn: maps ``[1, C_in, H, W]`` to ``[1, C_out, H, W]`` (same ``H, W``), e.g. a module in eval mode.
        x: ``[1, C_in, H, W]``; float64 is advised.
        seed: seed of the random channel mix ``u`` whose gradient ``∂⟨u, y[:, i]⟩/∂x`` is taken
            (a plain sum over channels could cancel by accident; a random mix does not).

    One backward pass per output pixel: use small maps.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"x must be one image [1, C, H, W], got shape {tuple(x.shape)}")
    x = x.detach().requires_grad_(True)
    y = fn(x)
    if y.shape[0] != 1 or y.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"fn must keep the batch and the map size; {tuple(x.shape)} -> {tuple(y.shape)}")
    generator = torch.Generator().manual_seed(seed)
    mix = torch.randn(y.shape[1], generator=generator, dtype=y.dtype).to(y.device)
    flat = rearrange(y[0], "c h w -> (h w) c") @ mix
    rows = []
    for i in range(flat.numel()):
        (grad,) = torch.autograd.grad(flat[i], x, retain_graph=True)
        rows.append(rearrange(grad[0] != 0, "c h w -> (h w) c").any(dim=-1))
    return torch.stack(rows)


def reach(steps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """After each step, who reaches whom: ``[S_1, S_2 S_1, …]`` as boolean ``[N, N]`` matrices."""
    if not steps:
        raise ValueError("a mechanism needs at least one step")
    reached, out = None, []
    for step in steps:
        step = step.to(torch.bool)
        if step.dim() != 2 or step.shape[0] != step.shape[1]:
            raise ValueError(f"each step's support must be [N, N], got shape {tuple(step.shape)}")
        reached = step if reached is None else (step.double() @ reached.double()) > 0
        out.append(reached)
    return out


def hop_distances(steps: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[N, N]`` int64: the first step after which input ``j`` reaches output ``i``; ``-1`` if never.

    Meaningful when every step lets each pixel keep its own information (its support holds the
    diagonal, as for every attention here): then what is reached stays reached.
    """
    reached = reach(steps)
    distance = torch.full(reached[0].shape, -1, dtype=torch.long)
    for t, now in enumerate(reached, start=1):
        distance[(distance < 0) & now] = t
    return distance


def path_length(steps: Sequence[torch.Tensor]) -> int | None:
    """The number of steps after which every pixel reaches every other, or ``None`` if the
    mechanism never connects some pair (e.g. window attention across windows)."""
    for t, now in enumerate(reach(steps), start=1):
        if bool(now.all()):
            return t
    return None
