"""Interlaced sparse self-attention (ISA): Eq. 5–9, 12–21 and Algorithm 1 of the OCNet paper.

Axis glossary (used by every einops pattern in this package):

====  =================================================================
b     batch
c     channels
h, w  height and width of the map, in raster order
ph    index of the *global* group along the height, ``0 ≤ ph < P_h``
pw    index of the global group along the width, ``0 ≤ pw < P_w``
qh    index of the *local* group along the height, ``0 ≤ qh < Q_h``
qw    index of the local group along the width, ``0 ≤ qw < Q_w``
n, m  positions inside one group (query and key)
====  =================================================================

A pixel sits at ``h = qh·P_h + ph`` and ``w = qw·P_w + pw`` (Algorithm 1, line 9). Pixels that
share the *remainder* ``(ph, pw)`` form one global group (Eq. 7): they lie ``P_h``/``P_w`` apart
and span the whole image. Pixels that share the *quotient* ``(qh, qw)`` form one local group
(Eq. 8): a ``P_h × P_w`` block of neighbours. The global stage runs self-attention inside each
of the ``P_h·P_w`` global groups (``Q_h·Q_w`` members each), the local stage inside each of the
``Q_h·Q_w`` local groups (``P_h·P_w`` members each). Two hops connect every output to every input.

Sizes that are not multiples of the group counts are padded at the bottom/right to
``Q_h·P_h × Q_w·P_w`` with ``Q_h = ceil(H / P_h)``; padded positions are masked out as keys, so
they receive exactly zero relation weight, and are cropped away after each stage.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from ocnet_edu.nn.attention import AttentionOutput, SelfAttention, attend, attention_channels
from ocnet_edu.nn.flavour import Flavour, get_flavour
from ocnet_edu.nn.isa_banded import banded_forward, banded_steps
from ocnet_edu.nn.isa_lean import lean_forward
from ocnet_edu.nn.layers import check_input, check_size
from ocnet_edu.nn.tracing import crop, exporting

__all__ = [
    "STAGES",
    "GROUP_PATTERNS",
    "ISAOutput",
    "grouped_attention",
    "padded_size",
    "split_padding",
    "InterlacedSparseSelfAttention",
]

STAGES = ("global", "local")

#: raster map -> groups of positions, for each stage (the group is folded into the batch axis)
GROUP_PATTERNS = {
    "global": "b c (qh ph) (qw pw) -> (b ph pw) (qh qw) c",
    "local": "b c (qh ph) (qw pw) -> (b qh qw) (ph pw) c",
}

#: the same grouping for a ``[h, w]`` validity mask, repeated over the batch
MASK_PATTERNS = {
    "global": "(qh ph) (qw pw) -> (b ph pw) (qh qw)",
    "local": "(qh ph) (qw pw) -> (b qh qw) (ph pw)",
}


class ISAOutput(NamedTuple):
    """ISA's output and the relations of its two stages (what ``return_relations=True`` returns).

    It unpacks like a tuple: ``y, global_relation, local_relation = isa(x, return_relations=True)``.

    Attributes:
        output: ``[B, C_out, H, W]``.
        global_relation: ``[B, P_h·P_w, Q_h·Q_w, Q_h·Q_w]`` (group ``ph·P_w + pw``, member
            ``qh·Q_w + qw``), or ``None`` without a global stage.
        local_relation: ``[B, Q_h·Q_w, P_h·P_w, P_h·P_w]`` (group ``qh·Q_w + qw``, member
            ``ph·P_w + pw``), or ``None`` without a local stage.
    """

    output: torch.Tensor
    global_relation: torch.Tensor | None
    local_relation: torch.Tensor | None


def _inverse(pattern: str) -> str:
    left, right = pattern.split("->")
    return f"{right.strip()} -> {left.strip()}"


def check_groups(groups: int | Sequence[int]) -> tuple[int, int]:
    """Normalise ``groups`` to ``(P_h, P_w)``; raise ``ValueError`` naming ``groups`` on anything else."""
    if isinstance(groups, int) and not isinstance(groups, bool):
        groups = (groups, groups)
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Iterable):
        raise ValueError(f"groups must be an int or a pair of ints (P_h, P_w), got {groups!r}")
    groups = tuple(groups)
    if len(groups) != 2 or not all(isinstance(g, int) and not isinstance(g, bool) for g in groups):
        raise ValueError(f"groups must be an int or a pair of ints (P_h, P_w), got {groups!r}")
    if min(groups) <= 0:
        raise ValueError(f"group counts must be positive, got groups={groups}")
    return groups  # type: ignore[return-value]


def check_stages(stages: Sequence[str]) -> tuple[str, ...]:
    """Validate the stage order: a non-empty ordering of distinct names from ``STAGES``."""
    if isinstance(stages, str) or not isinstance(stages, Iterable):
        stages = (stages,)
    stages = tuple(stages)
    names_ok = all(isinstance(stage, str) for stage in stages)
    if not stages or not names_ok or len(set(stages)) != len(stages) or not set(stages) <= set(STAGES):
        raise ValueError(
            f"stages must be one or both of {STAGES} without repetition, e.g. ('global', 'local'); got {stages!r}"
        )
    return stages


def padded_size(size: tuple[int, int], groups: int | Sequence[int]) -> tuple[int, int]:
    """The padded grid ``(Q_h·P_h, Q_w·P_w)`` with ``Q = ceil(size / P)``.

    Args:
        size: ``(H, W)``, positive ints.
        groups: ``(P_h, P_w)`` (an int means the same for both).
    """
    return _round_up(check_size(size), check_groups(groups))


def _round_up(size, groups: tuple[int, int]) -> tuple:
    """``size`` rounded up to multiples of ``groups``, unchecked.

    Integer arithmetic only (``(s + p − 1) // p · p``, not ``math.ceil(s / p)``): with symbolic
    sizes (``torch.compile``, dynamic shapes) it stays an integer expression that every backend can
    generate code for. The numerator stays non-negative: the ONNX exporter writes ``//`` as ONNX
    ``Div``, which truncates towards zero, so ``-(-s // p)`` would round 9/2 down to 4 there.
    """
    return tuple((s + p - 1) // p * p for s, p in zip(size, groups))


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """``channels_last`` for a 4-D map stored that way (and not also NCHW-contiguous), else NCHW."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _crop(x: torch.Tensor, rows: tuple, cols: tuple, memory_format: torch.memory_format | None = None):
    """``x[..., rows[0]:rows[1], cols[0]:cols[1]]``, made contiguous in ``memory_format`` unless it
    is ``None`` (ρ, a 1×1 conv, is much slower on the strided view); while exporting, the gather
    :func:`~ocnet_edu.nn.tracing.crop`, which records no guard on the example's size."""
    if exporting():
        return crop(x, rows, cols)
    x = x[..., rows[0]:rows[1], cols[0]:cols[1]]
    return x if memory_format is None else x.contiguous(memory_format=memory_format)


def _check_maps(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, stage: str) -> None:
    """``ValueError`` unless ``stage`` is a stage name and the maps are 4-D of one ``b, h, w``."""
    if stage not in GROUP_PATTERNS:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        shapes = [tuple(t.shape) for t in (query, key, value)]
        raise ValueError(f"query, key and value must be 4-D maps [b, c, h, w], got shapes {shapes}")
    same_grid = all(t.shape[0] == query.shape[0] and t.shape[2:] == query.shape[2:] for t in (key, value))
    if not same_grid or query.shape[1] != key.shape[1]:
        shapes = [tuple(t.shape) for t in (query, key, value)]
        raise ValueError(
            f"query and key must be [b, d, h, w] and value [b, e, h, w] with one b, h, w; "
            f"got shapes (query, key, value) {shapes}"
        )


def _pad_and_mask(query, key, value, stage: str, groups: tuple[int, int], padded: tuple[int, int]):
    """Zero-pad the maps at the bottom/right to ``padded`` and the key mask that hides the padded
    positions from every group of ``stage`` (the paper's masked padding)."""
    (height, width), (pad_h, pad_w) = query.shape[-2:], padded
    pad = (0, pad_w - width, 0, pad_h - height)
    query, key, value = (F.pad(t, pad) for t in (query, key, value))
    # comparisons rather than a slice assignment: with symbolic sizes (export) both are graph ops
    rows = torch.arange(pad_h, device=query.device) < height
    cols = torch.arange(pad_w, device=query.device) < width
    valid = rearrange(rows, "h -> h 1") & rearrange(cols, "w -> 1 w")
    key_mask = repeat(valid, MASK_PATTERNS[stage], b=query.shape[0], ph=groups[0], pw=groups[1])
    return query, key, value, key_mask


def grouped_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    stage: str,
    groups: tuple[int, int],
    return_relations: bool = False,
    fused: bool = True,
) -> AttentionOutput:
    """Self-attention restricted to the global or the local groups (Eq. 13–17 / Eq. 18–21).

    Args:
        query, key: ``[b, d, h, w]`` maps θ(X), φ(X).
        value: ``[b, e, h, w]`` map δ(X).
        stage: ``"global"`` (groups share the remainder) or ``"local"`` (share the quotient).
        groups: ``(P_h, P_w)``.
        return_relations: also return the relations of every group.
        fused: see :func:`ocnet_edu.nn.attention.attend`.

    Returns:
        ``AttentionOutput(out [b, e, h, w], relation)`` where ``relation`` is ``None`` or
        ``[b, P_h·P_w, Q_h·Q_w, Q_h·Q_w]`` (global) / ``[b, Q_h·Q_w, P_h·P_w, P_h·P_w]`` (local),
        computed over the padded grid when ``h``/``w`` are not multiples of the groups. ``out``
        has the memory format of ``query`` (a ``channels_last`` map stays ``channels_last``).

    Raises:
        ValueError: an unknown ``stage``, malformed ``groups``, or maps that are not 4-D with one
            ``b, h, w`` (and one ``d`` for query and key).
    """
    _check_maps(query, key, value, stage)
    groups = check_groups(groups)
    batch, _, height, width = query.shape
    p_h, p_w = groups
    pad_h, pad_w = _round_up((height, width), groups)
    memory_format = torch.contiguous_format if exporting() else _memory_format(query)
    key_mask = None
    # while exporting, always pad (by Q·P − H ≥ 0): an `if` on the example's size would be baked in
    if exporting() or (pad_h, pad_w) != (height, width):
        query, key, value, key_mask = _pad_and_mask(query, key, value, stage, groups, (pad_h, pad_w))
    pattern = GROUP_PATTERNS[stage]
    q, k, v = (rearrange(t, pattern, ph=p_h, pw=p_w) for t in (query, key, value))
    out, weights = attend(q, k, v, key_mask=key_mask, return_relations=return_relations, fused=fused)
    out = rearrange(out, _inverse(pattern), b=batch, ph=p_h, pw=p_w, qh=pad_h // p_h, qw=pad_w // p_w)
    out = _crop(out, (0, height), (0, width), memory_format)
    if weights is not None:
        weights = rearrange(weights, "(b g) n m -> b g n m", b=batch)
    return AttentionOutput(out, weights)


def split_padding(size: tuple[int, int], groups: tuple[int, int]) -> tuple[int, int, int, int]:
    """Zero padding of the public implementations: ``(left, right, top, bottom)`` for ``F.pad``.

    The missing rows ``Q_h·P_h − H`` are split, the smaller half on top (``⌊·/2⌋``), the rest at
    the bottom; columns likewise. This is the ``zeros-split`` padding of the openseg and mmseg
    flavours; the paper's flavour pads at the bottom/right and masks instead.
    """
    return _split_padding(check_size(size), check_groups(groups))


def _split_padding(size, groups: tuple[int, int]) -> tuple:
    """:func:`split_padding` unchecked: integer arithmetic that symbolic sizes (export) go through."""
    pad_h, pad_w = (p - s for p, s in zip(_round_up(size, groups), size))
    return (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)


class InterlacedSparseSelfAttention(nn.Module):
    """Interlaced sparse self-attention: a global stage then a local stage (Algorithm 1).

    Each stage is a :class:`~ocnet_edu.nn.attention.SelfAttention` (its own θ, φ, δ, ρ) applied
    within groups; ``W = Wˡ Pᵀ Wᵍ P`` (Eq. 9) describes the two stages together, see
    :mod:`ocnet_edu.nn.relation`.

    Args:
        in_channels: ``C_in`` of the input ``[B, C_in, H, W]``.
        key_channels: θ/φ channels of both stages (default ``C_in // 2``).
        value_channels: δ channels of both stages (default ``C_in // 2``).
        out_channels: output channels (default ``C_in``); the first stage maps
            ``C_in → C_out``, the second ``C_out → C_out``.
        groups: ``(P_h, P_w)``, the number of global groups along height and width (an int
            means the same for both). The local groups then number ``Q_h = ceil(H / P_h)`` by
            ``Q_w = ceil(W / P_w)``.
        stages: the order of the stages: ``("global", "local")`` (the paper's default),
            ``("local", "global")``, ``("global",)`` or ``("local",)`` — the Table 1 ablations.
        flavour: ``"paper"`` (default: padded keys masked) or a public implementation's
            :mod:`~ocnet_edu.nn.flavour`; with ``padding="zeros-split"`` the input is zero-padded
            on both sides once, both stages run on the padded map (padded pixels take part as
            keys), and the output is cropped (:func:`split_padding`).

    Attributes:
        fused: whether the stages use PyTorch's fused attention kernel (see
            :class:`~ocnet_edu.nn.attention.SelfAttention`); reading or setting it here reads or
            sets the flag of every stage. With it (the default) and no relations asked for, the
            forward pass is :func:`~ocnet_edu.nn.isa_lean.lean_forward` (the same numbers, less
            memory, faster), or, for CPU inference in eval mode,
            :func:`~ocnet_edu.nn.isa_banded.banded_forward` (bands of pixel rows, less still);
            otherwise each stage runs :func:`grouped_attention` on maps.
        recompute: in training on the fused path, save only the outputs of each stage's matrix
            products and attention for backward and run its batch-norms, activations and copies
            again there (selective :func:`torch.utils.checkpoint.checkpoint`, see
            :mod:`~ocnet_edu.nn.isa_lean`): about a third less memory for a few percent of time.
            Default True.
    """

    def __init__(
        self,
        in_channels: int,
        key_channels: int | None = None,
        value_channels: int | None = None,
        out_channels: int | None = None,
        groups: int | Sequence[int] = (8, 8),
        stages: Sequence[str] = STAGES,
        flavour: str | Flavour = "paper",
    ) -> None:
        super().__init__()
        self.flavour = get_flavour(flavour)
        self.groups = check_groups(groups)
        self.stages = check_stages(stages)
        # defaults from C_in for both stages (the second stage's input has C_out channels)
        key_channels, value_channels, out_channels = attention_channels(
            in_channels, key_channels, value_channels, out_channels
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.recompute = True
        stage_in = in_channels
        for stage in self.stages:
            self.add_module(f"{stage}_stage",
                            SelfAttention(stage_in, key_channels, value_channels, out_channels, self.flavour))
            stage_in = out_channels

    def stage(self, name: str) -> SelfAttention:
        """The :class:`SelfAttention` module of the ``"global"`` or ``"local"`` stage."""
        if name not in self.stages:
            raise ValueError(f"this module has no {name!r} stage (stages={self.stages})")
        return getattr(self, f"{name}_stage")

    @property
    def fused(self) -> bool:
        """True when every stage uses the fused attention kernel."""
        return all(self.stage(name).fused for name in self.stages)

    @fused.setter
    def fused(self, value: bool) -> None:
        """Set the flag of every stage."""
        for name in self.stages:
            self.stage(name).fused = value

    def forward(self, x: torch.Tensor, return_relations: bool = False):
        """Args:
            x: ``[B, C_in, H, W]``, any ``H, W ≥ 1``.
            return_relations: also return the relations of both stages.

        Returns:
            ``y [B, C_out, H, W]``, or :class:`ISAOutput` ``(y, global_relation, local_relation)``;
            a stage not in ``stages`` gives ``None``.
        """
        check_input(x, self.in_channels, type(self).__name__)  # names this module, not its first stage
        window = None  # the rows and columns of the input inside the padded map
        if self.flavour.padding == "zeros-split":
            pad = _split_padding(tuple(x.shape[-2:]), self.groups)
            x = F.pad(x, pad)
            window = ((pad[2], x.shape[-2] - pad[3]), (pad[0], x.shape[-1] - pad[1]))
        if self.fused and not return_relations and not exporting():  # export traces the branch-free path
            stages = [(name, self.stage(name)) for name in self.stages]
            padded = _round_up(tuple(x.shape[-2:]), self.groups)
            steps = banded_steps(stages, x)
            if steps is not None:  # CPU inference: the same numbers, in bands of pixel rows
                x = banded_forward(stages, x, self.groups, padded, steps)
            else:
                x = lean_forward(stages, x, self.groups, padded, recompute=self.recompute and self.training)
            return x if window is None else _crop(x, *window)
        relations: dict[str, torch.Tensor | None] = {name: None for name in STAGES}
        for name in self.stages:
            module = self.stage(name)
            query, key, value = module.transforms(x)
            out, relations[name] = grouped_attention(
                query, key, value, name, self.groups, return_relations=return_relations, fused=module.fused
            )
            x = module.rho(out)
        if window is not None:
            x = _crop(x, *window)
        return ISAOutput(x, relations["global"], relations["local"]) if return_relations else x
