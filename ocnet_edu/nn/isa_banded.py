"""ISA's inference pass on a CPU, one band of pixel rows at a time.

Without autograd and with every batch-norm in eval mode, θ, φ, δ and ρ are maps of one pixel at a
time: a chain of affine maps (1×1 convolutions with their batch-norms folded in,
:func:`~ocnet_edu.nn.isa_lean.folded_weights`) and activations. They can then run on any subset of
the pixels. :func:`banded_forward` runs them on **bands**: ``P_h`` consecutive rows of the padded
map (one value of ``q_h``; a block of several bands at once), which are the rows of ``Q_w`` whole
local groups and one position of ``Q_w`` in every global group. For each block of raster rows it

1. reads the stage's input rows: the input map itself (first stage) or the previous stage's
   attention output, copied from its groups into raster order and passed through its ρ;
2. runs the first 1×1 convolutions of θ, φ and δ as **one** product (their weights stacked: the
   input is read once, and one wide product runs faster than three narrow ones), then the rest of
   each transform on its columns;
3. writes q, k and v straight into their groups for this stage.

The attention (Eq. 10–11 per group, :func:`~ocnet_edu.nn.attention.attend`) runs on chunks of
groups, and each chunk's output is written over its queries, which are dead once attended
(:func:`attend_over_queries`); the next stage's q, k, v take the memory of this stage's dead ones.
So a pass makes only four map-sized tensors and the result (at ``1×512×128×256``: four of 32 MiB
and one of 64 MiB): no ungrouped transform
output, no regrouped copy, no ρ output between the stages, no separate attention output. The work
on a block stays in the cache, and far less new memory is asked of the allocator, whose large
blocks the kernel must fault in page by page (the efficiency chapter measures both).
:func:`~ocnet_edu.nn.isa_lean.lean_forward` computes the same numbers and runs wherever this pass
does not apply (autograd, a GPU, ``torch.compile``, autocast, a layer that is not a per-pixel
map). On a GPU the caching allocator already reuses memory and many small products would cost
kernel launches, so the bands are a CPU layout.

Padded maps: only the pixels of the input are transformed (no work is spent on padding); the
padded positions of q, k and v are zeros, and padded keys are masked as in the explicit path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ocnet_edu.nn.attention import attend
from ocnet_edu.nn.isa_lean import (ROW_PATTERNS, _foldable_norm, _group_count, _key_mask, _plain_1x1,
                                   folded_weights)

__all__ = ["BLOCK_PIXELS", "GROUPED_6D", "PARTS", "Step", "Workspace", "attend_over_queries", "banded_applies",
           "banded_forward", "banded_steps", "blocks", "pointwise_steps", "run_steps"]

#: A per-pixel step: an affine map ``(weight [o, i], bias [o] or None)`` or an activation, given by
#: its negative slope (0.0: ReLU).
Step = tuple[torch.Tensor, torch.Tensor | None] | float

#: Pixels per block (whole bands, at least one): its work buffers stay small next to the maps
BLOCK_PIXELS = 2048

#: every grouped layout of :data:`~ocnet_edu.nn.isa_lean.ROW_PATTERNS` seen as the padded raster,
#: with the bands (``qh``) as an axis: a view, no copy
GROUPED_6D = "b qh ph qw pw c"


def _layers(module: nn.Module) -> list[nn.Module]:
    """The leaves of a (nested) ``nn.Sequential``, in order."""
    if isinstance(module, nn.Sequential):
        return [leaf for layer in module for leaf in _layers(layer)]
    return [module]


def pointwise_steps(module: nn.Module) -> list[Step] | None:
    """``module`` (θ, φ, δ or ρ) as per-pixel steps, or ``None`` when it is not such a chain here.

    Accepted: plain 1×1 convolutions, each optionally followed by a foldable batch-norm
    (:func:`~ocnet_edu.nn.isa_lean._foldable_norm`: eval mode, no autograd, no hooks), ``ReLU``,
    ``LeakyReLU`` and ``Identity``; the first layer must be a convolution. Anything else (a
    batch-norm in training mode, whose statistics span the whole map; another layer; a hook,
    which a step would skip) gives ``None``.
    """
    layers = _layers(module)
    hooked = any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())
    if hooked or not layers or not _plain_1x1(layers[0]):
        return None
    steps: list[Step] = []
    index = 0
    while index < len(layers):
        layer = layers[index]
        if _plain_1x1(layer) and index + 1 < len(layers) and _foldable_norm(layers[index + 1]):
            steps.append(folded_weights(layer, layers[index + 1]))
            index += 1
        elif _plain_1x1(layer):
            steps.append((rearrange(layer.weight, "o i 1 1 -> o i"), layer.bias))
        elif type(layer) is nn.ReLU:
            steps.append(0.0)
        elif type(layer) is nn.LeakyReLU:
            steps.append(float(layer.negative_slope))
        elif type(layer) is not nn.Identity:
            return None
        index += 1
    return steps


def run_steps(steps: list[Step], rows: torch.Tensor, owned: bool = False, work: Workspace | None = None,
              name: str = "") -> torch.Tensor:
    """``steps`` on ``rows [m, c_in]`` (any strides) → ``[m, c_out]``. Activations run in place on
    what a step made here, and on ``rows`` itself only if ``owned`` (the caller's buffer). With a
    :class:`Workspace`, affine step ``i`` writes into its buffer ``f"{name}{i}"``."""
    fresh = owned
    for index, step in enumerate(steps):
        if isinstance(step, float):
            if not fresh:
                rows, fresh = rows.clone(), True
            rows = rows.relu_() if step == 0.0 else F.leaky_relu_(rows, step)
        else:
            weight, bias = step
            out = None if work is None else work(f"{name}{index}", rows.shape[0], weight.shape[0])
            rows = torch.mm(rows, weight.t(), out=out) if bias is None else torch.addmm(bias, rows, weight.t(), out=out)
            fresh = True
    return rows


class Workspace:
    """The work buffers of one pass, each made once, for the largest block, and reused by every
    block: their pages are faulted in once per pass instead of once per block."""

    def __init__(self, like: torch.Tensor) -> None:
        self.like = like
        self.buffers: dict[tuple[str, int], torch.Tensor] = {}

    def __call__(self, name: str, rows: int, columns: int) -> torch.Tensor:
        """An uninitialised contiguous ``[rows, columns]`` buffer, the same memory on every call."""
        buffer = self.buffers.get((name, columns))
        if buffer is None or buffer.shape[0] < rows:
            buffer = self.buffers[(name, columns)] = self.like.new_empty(rows, columns)
        return buffer[:rows]


#: θ, φ, δ and ρ of one stage as per-pixel steps (:func:`pointwise_steps`), by part name
PARTS = ("theta", "phi", "delta", "rho")


def banded_steps(stages: list[tuple[str, nn.Module]], x: torch.Tensor) -> list[dict[str, list[Step]]] | None:
    """For each stage, its θ, φ, δ, ρ as per-pixel steps (:data:`PARTS` → steps), or ``None`` when
    :func:`banded_forward` does not apply to ``x``: it needs a CPU map without autograd, autocast or
    ``torch.compile``, parameters of its dtype, and every θ, φ, δ, ρ a chain of per-pixel steps."""
    if (x.device.type != "cpu" or torch.is_grad_enabled() or torch.compiler.is_compiling()
            or torch.is_autocast_enabled("cpu") or not x.is_floating_point()):
        return None
    plan = []
    for _, module in stages:
        parts = {name: getattr(module, name) for name in PARTS}
        if any(p.dtype != x.dtype or p.device != x.device for part in parts.values() for p in part.parameters()):
            return None
        steps = {name: pointwise_steps(part) for name, part in parts.items()}
        if any(step_list is None for step_list in steps.values()):
            return None
        plan.append(steps)
    return plan


def banded_applies(stages: list[tuple[str, nn.Module]], x: torch.Tensor) -> bool:
    """Whether :func:`banded_forward` runs for ``x`` (:func:`banded_steps` is not ``None``)."""
    return banded_steps(stages, x) is not None


def _pieces(first: int, last: int, width: int, groups: tuple[int, int]):
    """Raster rows ``first:last`` (``first`` a multiple of ``P_h``), all ``width`` columns, cut into
    rectangles each of which is whole bands and whole column groups of a grouped map, or the ragged
    rest at the bottom or right edge (at most four pieces).

    Yields ``(rows, columns, (qh, ph), (qw, pw))``: slices of the block and of the grouped axes.
    """
    (group_h, group_w), count = groups, last - first
    row_parts = [(slice(0, count // group_h * group_h), slice(first // group_h, first // group_h + count // group_h),
                  slice(None))]
    if count % group_h:
        band = first // group_h + count // group_h
        row_parts.append((slice(count // group_h * group_h, count), slice(band, band + 1), slice(0, count % group_h)))
    column_parts = [(slice(0, width // group_w * group_w), slice(0, width // group_w), slice(None))]
    if width % group_w:
        column_parts.append((slice(width // group_w * group_w, width), slice(width // group_w, width // group_w + 1),
                             slice(0, width % group_w)))
    for rows, qh, ph in row_parts:
        for columns, qw, pw in column_parts:
            if rows.stop > rows.start and columns.stop > columns.start:
                yield rows, columns, (qh, ph), (qw, pw)


def _copy_block(block: torch.Tensor, grouped: torch.Tensor, first: int, groups: tuple[int, int], into_groups: bool):
    """Copy raster rows ``block [rows, W, c]`` (starting at raster row ``first``) into one image's
    grouped map ``grouped [Q_h, P_h, Q_w, P_w, c]`` (``into_groups``), or the other way."""
    for rows, columns, (qh, ph), (qw, pw) in _pieces(first, first + block.shape[0], block.shape[1], groups):
        part = rearrange(block[rows, columns], "(qh ph) (qw pw) c -> qh ph qw pw c", ph=ph.stop or groups[0],
                         pw=pw.stop or groups[1])
        target = grouped[qh, ph, qw, pw]
        (target.copy_(part) if into_groups else part.copy_(target))


def _grouped_view(tensor: torch.Tensor, stage: str, geometry: dict) -> torch.Tensor:
    """A grouped map ``[g, n, c]`` of ``stage`` as its :data:`GROUPED_6D` view (no copy)."""
    (group_h, group_w), batch = geometry["groups"], geometry["batch"]
    return rearrange(tensor, f"{ROW_PATTERNS[stage]} -> {GROUPED_6D}", b=batch, ph=group_h, pw=group_w,
                     qh=geometry["padded"][0] // group_h)


def _new_grouped(stage: str, shape: tuple[int, int, int], like: torch.Tensor, geometry: dict,
                 spare: list[torch.Tensor]) -> tuple:
    """An uninitialised grouped map ``[g, n, c]`` of ``stage`` with its padded positions zeroed, and
    its :data:`GROUPED_6D` view. Its memory is taken from a dead tensor of ``spare`` of the same size
    if there is one (and removed from ``spare``)."""
    reuse = next((t for t in spare if t.numel() == math.prod(shape) and t.dtype == like.dtype), None)
    if reuse is not None:
        spare.remove(reuse)
    tensor = like.new_empty(shape) if reuse is None else reuse.view(shape)
    (group_h, group_w), (height, width) = geometry["groups"], geometry["size"]
    view = _grouped_view(tensor, stage, geometry)
    if height % group_h:
        view[:, -1, height % group_h:].zero_()
    if width % group_w:
        view[:, :, :, -1, width % group_w:].zero_()
    return tensor, view


def _out_width(steps: list[Step]) -> int:
    """The number of channels ``steps`` produce: the output size of their last affine map."""
    return next(step[0].shape[0] for step in reversed(steps) if not isinstance(step, float))


def _stage_inputs(stage: str, stage_steps: dict[str, list[Step]], read_rows, geometry: dict, work: Workspace,
                  spare: list[torch.Tensor]) -> list[torch.Tensor]:
    """θ, φ, δ of one stage, block by block, written into grouped q, k, v ``[g, n, c]`` (new, or the
    memory of dead tensors of ``spare``).

    ``read_rows(b, first, last)`` gives the stage's input for raster rows ``first:last`` of image
    ``b`` as rows ``[(rows W), c_in]``.
    """
    steps = [stage_steps[name] for name in ("theta", "phi", "delta")]
    heads = [step_list[0] for step_list in steps]  # each transform's first affine map
    stacked_weight = torch.cat([weight for weight, _ in heads])
    stacked_bias = torch.cat([_bias(bias, weight) for weight, bias in heads])
    (group_h, _), (height, width) = geometry["groups"], geometry["size"]
    count = _group_count(stage, geometry["groups"], geometry["batch"], geometry["padded"])
    positions = geometry["batch"] * geometry["padded"][0] * geometry["padded"][1] // count
    outputs = [_new_grouped(stage, (count, positions, _out_width(s)), work.like, geometry, spare) for s in steps]
    for b in range(geometry["batch"]):
        for first, last in blocks(height, width, group_h):
            rows = read_rows(b, first, last)
            joint = torch.addmm(stacked_bias, rows, stacked_weight.t(),
                                out=work("joint", rows.shape[0], stacked_weight.shape[0]))
            start = 0
            for part, step_list, (_, view) in zip("qkv", steps, outputs):
                columns = joint[:, start:start + step_list[0][0].shape[0]]
                start += columns.shape[1]
                out = run_steps(step_list[1:], columns, owned=True, work=work, name=part)
                _copy_block(rearrange(out, "(h w) c -> h w c", w=width), view[b], first, geometry["groups"],
                            into_groups=True)
    return [tensor for tensor, _ in outputs]


def _read_groups(grouped: torch.Tensor, stage: str, steps: list[Step], geometry: dict, work: Workspace):
    """``read_rows`` for what follows ``stage``: raster rows of ``grouped`` (``stage``'s attention
    output ``[g, n, e]``) copied out of their groups, then ``steps`` (its ρ, or ρ's first steps)."""
    width, view = geometry["size"][1], _grouped_view(grouped, stage, geometry)

    def read_rows(b: int, first: int, last: int) -> torch.Tensor:
        block = work("gathered", (last - first) * width, grouped.shape[-1])
        _copy_block(rearrange(block, "(h w) c -> h w c", w=width), view[b], first, geometry["groups"],
                    into_groups=False)
        return run_steps(steps, block, work=work, name="rho")  # (steps start with an affine map)

    return read_rows


def banded_forward(stages: list[tuple[str, nn.Module]], x: torch.Tensor, groups: tuple[int, int],
                   padded: tuple[int, int], steps: list[dict[str, list[Step]]] | None = None) -> torch.Tensor:
    """ISA's stages on ``x [B, C_in, H, W]`` → ``[B, C_out, H, W]`` in bands (see the module's docstring).

    Same arguments and result as :func:`~ocnet_edu.nn.isa_lean.lean_forward`; ``steps``: what
    :func:`banded_steps` gave for them (computed here if not given). The output has the memory
    format of ``x``.

    Raises:
        ValueError: the pass does not apply (:func:`banded_steps` is ``None``).
    """
    steps = banded_steps(stages, x) if steps is None else steps
    if steps is None:
        raise ValueError("banded_forward: x must be a floating CPU map without autograd, autocast or compiling, "
                         "and every theta, phi, delta, rho a per-pixel chain (see banded_steps)")
    geometry = {"groups": groups, "batch": x.shape[0], "size": tuple(x.shape[-2:]), "padded": padded}
    height, width = geometry["size"]
    work = Workspace(x)

    def read_rows(b: int, first: int, last: int) -> torch.Tensor:  # a view: NCHW rows are read transposed
        return rearrange(x[b, :, first:last], "c h w -> (h w) c")

    # the last ρ: its steps up to its last affine map, which writes the output (then its activations)
    rho = steps[-1]["rho"]
    last_affine = max(index for index, step in enumerate(rho) if not isinstance(step, float))
    weight, bias = rho[last_affine][0], _bias(rho[last_affine][1], rho[last_affine][0])
    out, spare = None, []  # spare: dead grouped maps, whose memory the next stage's q, k, v take
    for index, ((name, _), stage_steps) in enumerate(zip(stages, steps, strict=True)):
        query, key, value = _stage_inputs(name, stage_steps, read_rows, geometry, work, spare)
        read_rows = out = None  # the previous stage's attention output is read: free it first
        mask = _key_mask(name, groups, geometry["size"], padded, geometry["batch"], x.device)
        out = attend_over_queries(query, key, value, mask)
        spare = [t for t in (query, key, value) if t.untyped_storage().data_ptr() != out.untyped_storage().data_ptr()]
        del query, key, value
        last = index == len(stages) - 1
        read_rows = _read_groups(out, name, rho[:last_affine] if last else stage_steps["rho"], geometry, work)
    del spare  # the last stage's dead q, k, v: nothing takes their memory now
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    result = torch.empty(x.shape[0], weight.shape[0], height, width, dtype=x.dtype,
                         memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    activations = rho[last_affine + 1:]
    for b in range(x.shape[0]):
        for first, last in blocks(height, width, groups[0]):
            rows, target = read_rows(b, first, last), result[b, :, first:last]
            if channels_last:  # the output's rows are contiguous: the product writes them
                product = torch.addmm(bias, rows, weight.t(), out=rearrange(target, "c h w -> (h w) c"))
                run_steps(activations, product, owned=True)
            else:  # NCHW: the product made as columns (one per pixel), then copied as whole channel rows
                product = torch.addmm(rearrange(bias, "o -> o 1"), weight, rows.t(),
                                      out=work("columns", weight.shape[0], rows.shape[0]))
                target.copy_(rearrange(run_steps(activations, product, owned=True), "c (h w) -> c h w", w=width))
    return result


def blocks(height: int, width: int, multiple: int) -> list[tuple[int, int]]:
    """Raster rows ``(first, last)`` of each block: whole multiples of ``multiple`` rows (bands, each
    block starting on one), about :data:`BLOCK_PIXELS` pixels each (at least one band). A leftover
    of less than half a block joins the block before it, so that no block is a single row, whose
    products run slowly; that block, the largest, comes first, so that it sizes the work buffers
    (blocks are independent: their order does not matter)."""
    most = max(1, min(BLOCK_PIXELS, height * width // 8) // (multiple * width)) * multiple
    firsts = list(range(0, height, most))
    if len(firsts) > 1 and height - firsts[-1] < most / 2:
        firsts.pop()
    spans = list(zip(firsts, [*firsts[1:], height]))
    return [spans[-1], *spans[:-1]]


def attend_over_queries(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        key_mask: torch.Tensor | None) -> torch.Tensor:
    """:func:`~ocnet_edu.nn.attention.attend` (fused, Eq. 10–11 per group) on chunks of about
    :data:`BLOCK_PIXELS` query rows, each chunk's output written over its queries, which are dead
    once attended (when the output has the queries' shape; into a new tensor otherwise).

    Args: ``query, key [g, n, d]``, ``value [g, n, e]``, ``key_mask [g, n]`` or ``None``.
    Returns: ``[g, n, e]``; no map-sized tensor is made when ``e = d`` (each group's queries are
    read by its own chunk only, and overwritten after it).
    """
    out = query if value.shape[-1] == query.shape[-1] else value.new_empty(*query.shape[:2], value.shape[-1])
    chunk = max(1, BLOCK_PIXELS // query.shape[1])
    for first in range(0, query.shape[0], chunk):
        groups = slice(first, first + chunk)
        mask = None if key_mask is None else key_mask[groups]
        out[groups] = attend(query[groups], key[groups], value[groups], key_mask=mask, fused=True).output
    return out


def _bias(bias: torch.Tensor | None, weight: torch.Tensor) -> torch.Tensor:
    """``bias``, or zeros ``[o]`` for an affine map without one."""
    return weight.new_zeros(weight.shape[0]) if bias is None else bias
