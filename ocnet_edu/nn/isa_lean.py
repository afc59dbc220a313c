"""ISA's default forward pass, laid out so that it holds little memory and runs at matrix-product speed.

:class:`~ocnet_edu.nn.isa.InterlacedSparseSelfAttention` with ``fused=True`` (the default) and no
relations asked for runs :func:`lean_forward` (except in eval-mode CPU inference, where
:func:`~ocnet_edu.nn.isa_banded.banded_forward` runs the same steps in bands of pixel rows). It
computes exactly what the explicit path (:func:`~ocnet_edu.nn.isa.grouped_attention`, one stage at a
time on ``[B, C, H, W]`` maps)
computes, with the same modules and parameters; only the order of the work and the layout of
the tensors differ. Axis names are those of :mod:`ocnet_edu.nn.isa`; ``g`` is a group folded
into the batch, ``n`` a position inside it.

Three things make it lean:

* **Pixel rows.** Every map is kept as rows ``[g, n, c]``: one contiguous vector of channels per
  pixel (``channels_last``). A 1×1 convolution is then one matrix product over rows
  (:func:`linear_1x1`), batch-norm and the activation run on the ``channels_last`` view, and
  regrouping pixels copies whole rows instead of transposing channels. The first convolutions
  read an NCHW input as a transposed operand of the product (no copy of the input), and the last
  one writes an NCHW output the same way.
* **Grouped transforms.** θ, φ, δ and ρ are pointwise, so they can run on the grouped rows. After
  the first stage, ρ and the second stage's θ, φ, δ run directly in the second stage's grouping:
  one copy (the attention output, regrouped) replaces the three copies of q, k, v. Only when the
  map needs padding do the second stage's transforms run on the unpadded raster, so that
  batch-norm never sees a padded pixel.
* **Nothing kept alive.** Each transform's output is grouped as soon as it exists, and every
  intermediate (an ungrouped map, a stage's q, k, v once attended) is released before the next one
  is made. (A stage's input is still held by the caller until the stage returns; passing it on
  without a reference is a possible further saving of two maps in the second stage.)

In training, :func:`lean_forward` can wrap each stage in :func:`torch.utils.checkpoint.checkpoint`
with a selective policy (``recompute=True``): the outputs of the matrix products and of the fused
attention (:data:`SAVED_OPS`) are saved for backward; batch-norm, activations and the regrouping
copies, which are cheap but would hold most of the memory, run again during the backward pass.
Batch-norm statistics are restored after that second run, so a training step changes them
exactly once. (Recomputing the whole stage saved a little more memory and cost a quarter more
time: the products are where the time goes.)

Batch-norm and activations run on the rows as an ``[M, c, 1, 1]`` map (``M`` pixels): contiguous,
which the CPU kernels treat as ``channels_last``, with the statistics over all ``M`` pixels, as on
the ``[B, C, H, W]`` map. (An ``[g, c, n, 1]`` ``channels_last`` view gave the same numbers, but its
batch-norm and ReLU backward ran 6–12× slower.)

Without autograd (inference) three more things apply: a batch-norm in eval mode is folded into the
1×1 convolution before it (:func:`folded_1x1`) and the ReLU after it runs in place; products over
many rows run in blocks of :data:`CHUNK_ROWS`; and a padded map is grouped and ungrouped with one
copy per row (:func:`group_slots`).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from ocnet_edu.nn.attention import attend

__all__ = ["CHUNK_ROWS", "ROW_PATTERNS", "SAVED_OPS", "apply_pointwise", "folded_1x1", "folded_weights",
           "frozen_norm_statistics", "group_rows", "group_slots", "lean_forward", "linear_1x1", "regroup", "ungroup_rows"]

#: the groups of each stage, as rows (the right-hand sides of ``isa.GROUP_PATTERNS``)
ROW_PATTERNS = {"global": "(b ph pw) (qh qw) c", "local": "(b qh qw) (ph pw) c"}
RASTER = "b (qh ph) (qw pw) c"
RASTER_ROWS = "b (qh ph qw pw) c"  # the raster with its pixels in one axis, row-major
MASKS = {"global": "(qh ph) (qw pw) -> (b ph pw) (qh qw)", "local": "(qh ph) (qw pw) -> (b qh qw) (ph pw)"}


def linear_1x1(conv: nn.Conv2d, rows: torch.Tensor) -> torch.Tensor:
    """A 1×1 convolution applied to pixel rows: ``[g, n, c_in] -> [g, n, c_out]`` (contiguous).

    ``rows`` may be contiguous (one matrix product, :func:`torch.nn.functional.linear`) or the
    transposed view of an NCHW map, ``[b, c, (h w)]ᵀ``: then a batched product reads it as a
    transposed operand and no copy of it is made.
    """
    return _product(rows, rearrange(conv.weight, "o i 1 1 -> o i"), conv.bias)


def _plain_1x1(layer: nn.Module) -> bool:
    """A convolution that is a pure per-pixel matrix product (1×1, stride 1, no padding, one group)."""
    return (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.stride == (1, 1)
            and layer.padding in ((0, 0), "valid") and layer.groups == 1 and layer.dilation == (1, 1))


def _foldable_norm(layer: nn.Module) -> bool:
    """A batch-norm to fold: without autograd (inference), and an affine map per channel right
    now: eval mode with running statistics, a plain ``BatchNorm2d`` or ``SyncBatchNorm`` (no
    subclass with its own forward), no hooks.

    Not with autograd, even for a frozen (eval-mode) batch-norm in training: the in-place ReLU of
    the model would then overwrite the product's output, which a selective checkpoint keeps."""
    return (not torch.is_grad_enabled() and type(layer) in (nn.BatchNorm2d, nn.SyncBatchNorm) and not layer.training
            and layer.running_mean is not None and not layer._forward_hooks and not layer._forward_pre_hooks)


def folded_1x1(conv: nn.Conv2d, norm: nn.BatchNorm2d, rows: torch.Tensor) -> torch.Tensor:
    """``norm(conv(rows))`` with an eval-mode batch-norm folded into the convolution: one product
    (:func:`folded_weights`). The same numbers as the two steps up to float rounding; one pass over
    the output fewer."""
    return _product(rows, *folded_weights(conv, norm))


def folded_weights(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight ``[o, i]`` and bias ``[o]`` of the 1×1 convolution ``conv`` followed by the eval-mode
    batch-norm ``norm``, as one affine map.

    ``norm(z) = (z − μ)·s + β`` with ``s = γ / √(σ² + ε)``, so ``norm(W x + b) = (s·W) x + (b − μ)·s + β``.
    """
    scale = norm.running_var.add(norm.eps).rsqrt()
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return rearrange(conv.weight, "o i 1 1 -> o i") * rearrange(scale, "o -> o 1"), shift


#: Without autograd, products over more pixel rows than this run in blocks of ``CHUNK_ROWS`` rows
#: written into one output: on the 2-core CPU of the benchmark a ``[32768, 256] × [256, 512]``
#: product ran at 0.65× the rate of ``[4096, 256] × [256, 512]`` blocks of it (the output no longer
#: stays in cache). ``out=`` products have no autograd, so training runs the whole product.
CHUNK_ROWS = 4096


def _product(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``rows @ weightᵀ + bias`` for contiguous rows or the transposed view of an NCHW map."""
    if rows.is_contiguous():
        if torch.is_grad_enabled() or rows.shape[:-1].numel() <= 2 * CHUNK_ROWS:
            return F.linear(rows, weight, bias)
        matrix = rearrange(rows, "... c -> (...) c")
        out = matrix.new_empty(matrix.shape[0], weight.shape[0])
        for first in range(0, matrix.shape[0], CHUNK_ROWS):
            block = slice(first, first + CHUNK_ROWS)
            if bias is None:
                torch.mm(matrix[block], weight.t(), out=out[block])
            else:
                torch.addmm(bias, matrix[block], weight.t(), out=out[block])
        return out.view(*rows.shape[:-1], weight.shape[0])
    # (blocks of a transposed operand ran slower, not faster: the whole product here)
    weight_t = repeat(weight, "o i -> b i o", b=rows.shape[0])
    if bias is None:
        return torch.bmm(rows, weight_t)
    return torch.baddbmm(rearrange(bias, "o -> 1 1 o"), rows, weight_t)


def apply_pointwise(module: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """A pointwise transform (θ, φ: conv → BN → act; δ, ρ: a conv, or conv → BN → act) on rows.

    Args:
        module: a 1×1 ``Conv2d`` or an ``nn.Sequential`` (possibly nested) of 1×1 convolutions,
            batch-norms and activations.
        rows: ``[g, n, c_in]``.

    Returns:
        ``[g, n, c_out]``, contiguous. Batch-norm and the activation run as modules on the
        view ``[(g n), c, 1, 1]`` (so ``SyncBatchNorm`` and hooks work), with the same statistics
        as on the ``[B, C, H, W]`` map: the mean over all pixels. In eval mode a plain batch-norm
        right after a convolution is folded into it (:func:`folded_1x1`), and a ReLU then runs in place.
    """
    layers = list(module) if isinstance(module, nn.Sequential) else [module]
    index, fresh = 0, False  # fresh: ``rows`` is a tensor made here (may be overwritten in place)
    while index < len(layers):
        layer = layers[index]
        if isinstance(layer, nn.Sequential):  # θ and φ: two conv → BN → act blocks
            out = apply_pointwise(layer, rows)
            rows, fresh = out, fresh or out is not rows
        elif _plain_1x1(layer) and index + 1 < len(layers) and _foldable_norm(layers[index + 1]):
            rows, fresh = folded_1x1(layer, layers[index + 1], rows), True
            index += 1
        elif _plain_1x1(layer):
            rows, fresh = linear_1x1(layer, rows), True
        elif fresh and type(layer) is nn.ReLU and not torch.is_grad_enabled():
            rows = rows.relu_()
        else:
            groups = rows.shape[0]
            rows = rearrange(layer(rearrange(rows, "g n c -> (g n) c 1 1")), "(g n) c 1 1 -> g n c", g=groups)
            fresh = True
        index += 1
    return rows


def group_slots(stage: str, groups: tuple[int, int], batch: int, size: tuple[int, int], padded: tuple[int, int],
                device: torch.device | str) -> torch.Tensor:
    """``[b·h·w]`` int64 on ``device`` (that of the rows it indexes; no default, so that no caller
    indexes CUDA rows with a CPU tensor by forgetting it): the row, among the flattened groups
    ``(g n)`` of ``stage`` on the padded map, that each pixel of the unpadded raster (batch, then
    row-major) goes to. Padded pixels get none."""
    (height, width), (pad_h, pad_w) = size, padded
    raster = torch.arange(batch * pad_h * pad_w, device=device)
    pixel_of_slot = rearrange(raster, f"(b qh ph qw pw) -> {ROW_PATTERNS[stage].removesuffix(' c')}", b=batch,
                              ph=groups[0], pw=groups[1], qh=pad_h // groups[0])
    slot_of_pixel = torch.empty_like(raster)
    slot_of_pixel[pixel_of_slot.flatten()] = raster
    return rearrange(slot_of_pixel, "(b h w) -> b h w", b=batch, h=pad_h)[:, :height, :width].flatten()


def _group_count(stage: str, groups: tuple[int, int], batch: int, padded: tuple[int, int]) -> int:
    """How many groups ``stage`` has: ``b·P_h·P_w`` (global) or ``b·Q_h·Q_w`` (local)."""
    if stage == "global":
        return batch * groups[0] * groups[1]
    return batch * (padded[0] // groups[0]) * (padded[1] // groups[1])


def group_rows(rows: torch.Tensor, stage: str, groups: tuple[int, int], size: tuple[int, int],
               padded: tuple[int, int]) -> torch.Tensor:
    """Raster rows ``[b, (h w), c]`` → the groups of ``stage``, ``[g, n, c]`` (zero-padded to ``padded``).

    Without autograd, one copy either way: a rearrangement, or, when the map needs padding, each
    row written once into a zeroed grouped tensor at its slot (:func:`group_slots`; padding first
    and grouping after copies every row twice). With autograd the map is padded, then grouped:
    in a checkpointed training step both copies are recomputed, not kept, and the scattered write
    measured slower there, and with a higher peak (97×97 map).
    """
    batch, _, channels = rows.shape
    if padded == size or torch.is_grad_enabled():
        raster = rearrange(rows, "b (h w) c -> b h w c", h=size[0])
        if padded != size:
            raster = F.pad(raster, (0, 0, 0, padded[1] - size[1], 0, padded[0] - size[0]))
        return rearrange(raster, f"{RASTER} -> {ROW_PATTERNS[stage]}", ph=groups[0], pw=groups[1])
    slots = group_slots(stage, groups, batch, size, padded, rows.device)
    out = rows.new_zeros(batch * padded[0] * padded[1], channels)
    out.index_copy_(0, slots, rearrange(rows, "b n c -> (b n) c"))
    return rearrange(out, "(g n) c -> g n c", g=_group_count(stage, groups, batch, padded))


def regroup(rows: torch.Tensor, source: str, target: str, groups: tuple[int, int], batch: int,
            padded: tuple[int, int]) -> torch.Tensor:
    """The groups of stage ``source`` → those of stage ``target`` (one copy of the rows)."""
    sizes = {"b": batch, "ph": groups[0], "pw": groups[1], "qh": padded[0] // groups[0]}
    return rearrange(rows, f"{ROW_PATTERNS[source]} -> {ROW_PATTERNS[target]}", **sizes)


def ungroup_rows(rows: torch.Tensor, stage: str, groups: tuple[int, int], batch: int, size: tuple[int, int],
                 padded: tuple[int, int]) -> torch.Tensor:
    """The groups of ``stage`` ``[g, n, c]`` → raster rows ``[b, (h w), c]``, padding cropped away."""
    sizes = {"b": batch, "ph": groups[0], "pw": groups[1], "qh": padded[0] // groups[0]}
    if padded == size:
        return rearrange(rows, f"{ROW_PATTERNS[stage]} -> {RASTER_ROWS}", **sizes)
    if torch.is_grad_enabled():
        raster = rearrange(rows, f"{ROW_PATTERNS[stage]} -> {RASTER}", **sizes)[:, :size[0], :size[1]]
        return rearrange(raster, "b h w c -> b (h w) c")
    # one copy: each pixel's row read from its slot, the padding left behind
    slots = group_slots(stage, groups, batch, size, padded, rows.device)
    return rearrange(rearrange(rows, "g n c -> (g n) c").index_select(0, slots), "(b n) c -> b n c", b=batch)


def _key_mask(stage: str, groups, size, padded, batch: int, device) -> torch.Tensor | None:
    """``[g, n]`` bool, False at padded keys; ``None`` without padding."""
    if padded == size:
        return None
    valid = torch.zeros(padded, dtype=torch.bool, device=device)
    valid[:size[0], :size[1]] = True
    return repeat(valid, MASKS[stage], b=batch, ph=groups[0], pw=groups[1])


def _grouped_transform(module: nn.Module, rows: torch.Tensor, stage: str, geometry: dict, grouped: bool):
    """``module`` on ``rows``, its output grouped for ``stage`` unless the rows are grouped already.

    (A function, not a closure over ``rows``: ``del`` of a closed-over name stops torch.compile.)
    """
    out = apply_pointwise(module, rows)
    return out if grouped else group_rows(out, stage, geometry["groups"], geometry["size"], geometry["padded"])


def _attention(stage_module: nn.Module, rows: torch.Tensor, stage: str, geometry: dict, grouped: bool):
    """θ, φ, δ of one stage, each grouped as soon as it exists, then the fused attention.

    ``rows`` are this stage's groups already (``grouped``) or raster rows. Returns ``[g, n, e]``.
    """
    query = _grouped_transform(stage_module.theta, rows, stage, geometry, grouped)
    key = _grouped_transform(stage_module.phi, rows, stage, geometry, grouped)
    value = _grouped_transform(stage_module.delta, rows, stage, geometry, grouped)
    del rows
    # (None without padding, the only case in which the rows come grouped)
    mask = _key_mask(stage, geometry["groups"], geometry["size"], geometry["padded"], geometry["batch"], query.device)
    return attend(query, key, value, key_mask=mask, fused=True).output


def _to_rows(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` → raster rows ``[B, (H W), C]``: a view (contiguous for a channels_last map,
    the transposed view of an NCHW map otherwise)."""
    return rearrange(x, "b c h w -> b (h w) c")


def _output_map(rho: nn.Module, rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """ρ on raster rows ``[b, (h w), e]`` → ``[b, c_out, h, w]`` in the memory format of ``like``.

    For an NCHW ``like`` the first convolution writes NCHW directly (the rows are read as a
    transposed operand); the layers after it run as modules on that map.
    """
    height, width = like.shape[-2:]
    layers = list(rho) if isinstance(rho, nn.Sequential) else [rho]
    nchw = like.is_contiguous() and _plain_1x1(layers[0])
    if not nchw:
        return rearrange(apply_pointwise(rho, rows), "b (h w) c -> b c h w", h=height)
    weight = repeat(rearrange(layers[0].weight, "o i 1 1 -> o i"), "o i -> b o i", b=rows.shape[0])
    columns = rearrange(rows, "b n c -> b c n")  # a transposed view, read as such by the product
    if layers[0].bias is None:
        out = torch.bmm(weight, columns)
    else:
        out = torch.baddbmm(rearrange(layers[0].bias, "o -> 1 o 1"), weight, columns)
    out = rearrange(out, "b c (h w) -> b c h w", h=height)
    for layer in layers[1:]:
        out = layer(out)
    return out


def _stage(stage_module, rows, stage, geometry, grouped, next_stage, last):
    """One stage: attention, then ρ in the next stage's grouping (or raster rows for the last)."""
    out = _attention(stage_module, rows, stage, geometry, grouped)
    del rows
    groups, batch, size, padded = geometry["groups"], geometry["batch"], geometry["size"], geometry["padded"]
    if next_stage is not None and padded == size:
        out = regroup(out, stage, next_stage, groups, batch, padded)
    else:
        out = ungroup_rows(out, stage, groups, batch, size, padded)
    return out if last else apply_pointwise(stage_module.rho, out)


@contextlib.contextmanager
def frozen_norm_statistics(module: nn.Module):
    """Inside, every batch-norm of ``module`` updates throw-away copies of its running statistics.

    Used around a checkpointed stage's second forward pass (in backward), so that a training step
    updates the statistics once, as without recomputation. The buffers are swapped, not copied
    back: the first pass saved them for its backward, and an in-place write would invalidate that.
    """
    names = ("running_mean", "running_var", "num_batches_tracked")
    norms = [m for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    kept = [(m, [getattr(m, name) for name in names]) for m in norms]
    for m, buffers in kept:
        for name, buffer in zip(names, buffers):
            setattr(m, name, buffer.clone())
    try:
        yield
    finally:
        for m, buffers in kept:
            for name, buffer in zip(names, buffers):
                setattr(m, name, buffer)


_ATEN = torch.ops.aten
#: The operators whose outputs a checkpointed stage keeps for backward: matrix products (the 1×1
#: convolutions) and fused attention, whichever kernel the device picks. Everything else in a stage
#: (batch-norm, activations, the copies that regroup pixels) is elementwise or a copy: cheap to
#: run again, and it is what would otherwise fill the memory.
SAVED_OPS = frozenset(
    getattr(_ATEN, name).default
    for name in ("mm", "bmm", "addmm", "baddbmm", "convolution", "_scaled_dot_product_flash_attention_for_cpu",
                 "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                 "_scaled_dot_product_cudnn_attention")
    if hasattr(_ATEN, name)
)


def _save_products(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """Selective checkpointing policy: keep :data:`SAVED_OPS`' outputs, recompute the rest."""
    return CheckpointPolicy.MUST_SAVE if op in SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


@contextlib.contextmanager
def _recompute_context(stage_module: nn.Module, selective):
    """Around the second run of a stage: throw-away norm statistics, then the policy's cache."""
    with frozen_norm_statistics(stage_module), selective:
        yield


def _checkpointed(fn, stage_module, rows, *args):
    """``fn(stage_module, rows, *args)`` with selective recomputation: the outputs of its matrix
    products and attention are saved for backward, everything else is recomputed there."""

    def contexts():
        forward, recompute = create_selective_checkpoint_contexts(_save_products)
        return forward, _recompute_context(stage_module, recompute)

    return checkpoint(fn, stage_module, rows, *args, use_reentrant=False, context_fn=contexts)


def lean_forward(stages: list[tuple[str, nn.Module]], x: torch.Tensor, groups: tuple[int, int],
                 padded: tuple[int, int], recompute: bool = False) -> torch.Tensor:
    """ISA's stages (fused attention, no relations) on ``x [B, C_in, H, W]`` → ``[B, C_out, H, W]``.

    Args:
        stages: ``(name, SelfAttention)`` in order, e.g. ``[("global", g), ("local", l)]``.
        x: the input map, NCHW or ``channels_last``; the output has its memory format.
        groups: ``(P_h, P_w)``.
        padded: ``(Q_h·P_h, Q_w·P_w)``; keys at padded positions are masked out.
        recompute: checkpoint each stage (training: saves only the stage inputs).
    """
    geometry = {"groups": groups, "batch": x.shape[0], "size": tuple(x.shape[-2:]), "padded": padded}
    rows, grouped = _to_rows(x), False
    use_checkpoint = recompute and torch.is_grad_enabled() and not torch.compiler.is_compiling()
    for index, (name, module) in enumerate(stages):
        last = index == len(stages) - 1
        next_stage = None if last else stages[index + 1][0]
        arguments = (name, geometry, grouped, next_stage, last)
        rows = _checkpointed(_stage, module, rows, *arguments) if use_checkpoint else _stage(module, rows, *arguments)
        grouped = not last and padded == geometry["size"]
    return _output_map(stages[-1][1].rho, rows, like=x)
