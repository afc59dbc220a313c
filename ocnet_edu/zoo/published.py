"""Published OCNet/ISANet weights of other projects, loaded exactly into our modules.

Two projects published trained Cityscapes/ADE20K models:

* **openseg** (openseg-group/openseg.pytorch, the authors' code): ``isanet`` (ISA head),
  ``base_ocnet`` (Base-OC with dense SA) and ``asp_ocnet`` (a 3×3 conv 2048 → 512, then ASP-OC
  with a dense SA on a 2× max-pooled map) on ``deepbase_resnet101_dilated8``, trained with
  InPlace-ABN. InPlace-ABN normalises with ``|γ| + ε`` instead of ``γ``
  (``lib/extensions/inplace_abn*/src/inplace_abn_cpu.cpp``, ``forward_cpu``) and its head norms
  end with leaky ReLU 0.01; the loader stores ``|γ| + ε`` in our BatchNorm weights.
* **mmseg** (open-mmlab/mmsegmentation ``configs/isanet``): ``isanet_r50-d8`` and
  ``isanet_r101-d8`` on ResNetV1c (deep stem 32-32-64), ``ISAHead`` + ``FCNHead``.

:func:`load_published` builds an :class:`~ocnet_edu.model.OCNet` from our own modules in the
source's :mod:`flavour <ocnet_edu.nn.flavour>`, renames the source's keys to ours (every key
must be used, every one of ours filled) and attaches the source's test-time preprocessing as
``model.preprocess`` (:class:`Preprocess`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
from torch import nn

from ocnet_edu.backbones.imagenet import key_mismatches, read_state_dict
from ocnet_edu.backbones.resnet import DilatedResNet
from ocnet_edu.heads.asp_oc import ASPOC
from ocnet_edu.model import OCNet
from ocnet_edu.nn.attention import SelfAttention
from ocnet_edu.nn.isa import InterlacedSparseSelfAttention
from ocnet_edu.nn.layers import activation, conv_bn_act

__all__ = ["Preprocess", "PRESETS", "ARCHS", "PUBLISHED_MIOU", "FlavouredOCHead", "ReducedASPOC", "build_published", "convert_state_dict",
           "load_published", "source_keys"]

_BN_EPS = 1e-5


@dataclass(frozen=True)
class Preprocess:
    """A source's test-time input normalisation.

    Attributes:
        bgr: the network expects channels in B, G, R order.
        mean, std: per channel of the network's order, on the 0–255 scale.
        align_corners: of the bilinear up-sampling of the logits to the input size.
    """

    bgr: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    align_corners: bool

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """RGB images ``[B, 3, H, W]`` with values in [0, 1] → the network's input ``[B, 3, H, W]``."""
        x = images * 255.0
        if self.bgr:
            x = x.flip(1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


PRESETS = {
    # openseg configs/cityscapes/R_101_D_8.json: BGR (cv2), mean of the 0-255 values, std 1
    "openseg": Preprocess(True, (102.9801, 115.9465, 122.7717), (1.0, 1.0, 1.0), align_corners=True),
    # mmseg configs/_base_/models/isanet_r50-d8.py: data_preprocessor (bgr_to_rgb=True)
    "mmseg": Preprocess(False, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375), align_corners=False),
}


@dataclass(frozen=True)
class ArchSpec:
    """How one published network is put together from our modules."""

    depth: int
    stem_width: int
    pool_ceil_mode: bool
    ocp: str               # "isa" or "sa"
    flavour: str
    key_channels: int
    value_channels: int
    conv_bias: bool        # the head's reduce/fuse/aux convolutions carry a bias
    context_first: bool    # fuse sees concat[context, reduced] (else concat[reduced, context])
    aux_hidden: int
    slope: float           # activation slope of the head's and aux head's norms
    abn: bool              # InPlace-ABN weights: BN uses |γ| + ε
    head: str = "oc"       # "oc": FlavouredOCHead; "asp": ReducedASPOC


_OPENSEG = dict(depth=101, stem_width=64, pool_ceil_mode=True, key_channels=256, aux_hidden=512, slope=0.01,
                abn=True)
_MMSEG = dict(stem_width=32, pool_ceil_mode=False, ocp="isa", flavour="mmseg", key_channels=256,
              value_channels=512, conv_bias=False, context_first=True, aux_hidden=256, slope=0.0, abn=False)

ARCHS: dict[str, dict[str, ArchSpec]] = {
    "openseg": {
        "isanet": ArchSpec(**_OPENSEG, ocp="isa", flavour="openseg", value_channels=512, conv_bias=False,
                           context_first=False),
        "base_ocnet": ArchSpec(**_OPENSEG, ocp="sa", flavour="openseg_oc", value_channels=256, conv_bias=True,
                               context_first=True),
        # ASP-OC's OCP works on 256 channels: key = value = 128 (asp_oc_block.py)
        "asp_ocnet": ArchSpec(**{**_OPENSEG, "key_channels": 128}, ocp="sa", flavour="openseg_oc", value_channels=128,
                              conv_bias=True, context_first=True, head="asp"),
    },
    "mmseg": {"isanet_r50-d8": ArchSpec(depth=50, **_MMSEG), "isanet_r101-d8": ArchSpec(depth=101, **_MMSEG)},
}

PUBLISHED_MIOU: dict[tuple[str, str], float] = {
    ("openseg", "base_ocnet"): 79.49,    # openseg.pytorch MODEL_ZOO.md
    ("openseg", "isanet"): 79.55,        # openseg.pytorch MODEL_ZOO.md
    ("mmseg", "isanet_r101-d8"): 80.32,  # mmsegmentation configs/isanet/README.md, 512x1024 crop, 80k iterations
}
"""Cityscapes val mIoU (%), single scale, of the published checkpoints as their sources' model zoos
list them (quoted data, like :mod:`ocnet_edu.paper`'s tables): what scoring a downloaded
checkpoint with :mod:`ocnet_edu.engine.published` should come close to. openseg lists no score for
``asp_ocnet``, and mmseg's ``isanet_r50-d8`` row at this crop and schedule is not quoted here."""


class FlavouredOCHead(nn.Module):
    """reduce (3×3) → OCP → fuse (1×1 on the concatenation): Base-OC/ISA heads of the sources.

    Args:
        in_channels: backbone channels (2048).
        spec: the :class:`ArchSpec` (OCP kind, flavour, widths, biases, concat order).
        channels: width of the head (512 in every published model).

    Shapes:
        ``[B, in_channels, H, W] → [B, channels, H, W]``.
    """

    def __init__(self, in_channels: int, spec: ArchSpec, channels: int = 512) -> None:
        super().__init__()
        self.out_channels = channels
        self.context_first = spec.context_first
        self.reduce = conv_bn_act(in_channels, channels, 3, bias=spec.conv_bias, slope=spec.slope)
        widths = (channels, spec.key_channels, spec.value_channels, channels)
        if spec.ocp == "isa":
            self.ocp = InterlacedSparseSelfAttention(*widths, groups=(8, 8), flavour=spec.flavour)
        else:
            self.ocp = SelfAttention(*widths, flavour=spec.flavour)
        self.fuse = conv_bn_act(2 * channels, channels, 1, bias=spec.conv_bias, slope=spec.slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_channels, H, W] → [B, channels, H, W]``."""
        reduced = self.reduce(x)
        context = self.ocp(reduced)
        pair = [context, reduced] if self.context_first else [reduced, context]
        return self.fuse(torch.cat(pair, dim=1))


class ReducedASPOC(nn.Module):
    """openseg's ``asp_ocnet`` context: a 3×3 conv to 512 channels, then our
    :class:`~ocnet_edu.heads.asp_oc.ASPOC` with openseg's options (256-channel branches, dense SA
    in flavour ``openseg_oc`` on a 2× max-pooled map, BN + leaky ReLU after it, fuse to 512).

    Args:
        in_channels: backbone channels (2048).
        spec: the :class:`ArchSpec` (flavour, widths, slope).
        channels: width of the 3×3 reduction and of the output (512).

    Shapes:
        ``[B, in_channels, H, W] → [B, channels, H, W]``.
    """

    def __init__(self, in_channels: int, spec: ArchSpec, channels: int = 512) -> None:
        super().__init__()
        self.out_channels = channels
        self.reduce = conv_bn_act(in_channels, channels, 3, bias=spec.conv_bias, slope=spec.slope)
        self.aspoc = ASPOC(channels, ocp=spec.ocp, channels=channels // 2, key_channels=spec.key_channels,
                           value_channels=spec.value_channels, ocp_downsample=2, out_channels=channels,
                           flavour=spec.flavour, reduce_bias=spec.conv_bias, slope=spec.slope, context_norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_channels, H, W] → [B, channels, H, W]``."""
        return self.aspoc(self.reduce(x))


def _spec(source: str, arch: str) -> ArchSpec:
    if source not in ARCHS:
        raise ValueError(f"unknown source {source!r}; choose one of {sorted(ARCHS)}")
    if arch not in ARCHS[source]:
        raise ValueError(f"unknown arch {arch!r} for source {source!r}; choose one of {sorted(ARCHS[source])}")
    return ARCHS[source][arch]


def build_published(source: str, arch: str, num_classes: int, base_width: int = 64) -> OCNet:
    """Our :class:`OCNet` with the structure of ``source``'s ``arch`` (random weights, ``eval()``).

    ``base_width`` < 64 gives the same topology with narrower backbone stages (tests only).
    """
    spec = _spec(source, arch)
    stem = spec.stem_width * base_width // 64
    backbone = DilatedResNet(depth=spec.depth, deep_stem=True, base_width=base_width, stem_width=stem,
                             pool_ceil_mode=spec.pool_ceil_mode)
    head = (ReducedASPOC if spec.head == "asp" else FlavouredOCHead)(backbone.out_channels, spec)
    model = OCNet(backbone, head, num_classes=num_classes, align_corners=PRESETS[source].align_corners)
    model.aux_head = nn.Sequential(
        nn.Conv2d(backbone.aux_channels, spec.aux_hidden, 3, padding=1, bias=spec.conv_bias),
        nn.BatchNorm2d(spec.aux_hidden), activation(spec.slope), nn.Dropout2d(0.1),
        nn.Conv2d(spec.aux_hidden, num_classes, kernel_size=1),
    )
    model.preprocess = PRESETS[source]
    model.published = (source, arch)
    return model.eval()


def _block_prefixes(theirs: str, ours: str, names: dict[str, str]) -> list[tuple[str, str]]:
    """Prefix pairs of one attention block: θ/φ's two conv-BN pairs, δ, ρ."""
    pairs = [(f"{theirs}{names['value']}.", f"{ours}delta.")]
    for their_kq, our_kq in ((names["query"], "theta"), (names["key"], "phi")):
        for index, (conv, norm) in enumerate(names["layers"]):
            pairs += [(f"{theirs}{their_kq}{conv.format(i=index)}.", f"{ours}{our_kq}.{index}.0."),
                      (f"{theirs}{their_kq}{norm.format(i=index)}.", f"{ours}{our_kq}.{index}.1.")]
    pairs += [(f"{theirs}{theirs_rho}.", f"{ours}rho{ours_rho}.") for theirs_rho, ours_rho in names["rho"]]
    return pairs


_STEM = {"openseg": [(f"backbone.resinit.{n}{i}.", f"backbone.{n}{i}.") for n in ("conv", "bn") for i in (1, 2, 3)],
         "mmseg": [(f"backbone.stem.{j}.", f"backbone.{n}.") for j, n in
                   zip((0, 1, 3, 4, 6, 7), ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3"))]}
_OPENSEG_SA = {"query": "f_query.", "key": "f_key.", "value": "f_value", "layers": [("{i}", "{i}")]}


def _openseg_prefixes(arch: str) -> list[tuple[str, str]]:
    if arch == "isanet":
        names = dict(_OPENSEG_SA, layers=[("0", "1"), ("2", "3")], rho=[("W.0", ".0"), ("W.1", ".1")])
        pairs = [("isa_head.0.", "context.reduce.0."), ("isa_head.1.", "context.reduce.1."),
                 ("isa_head.2.conv_bn.0.", "context.fuse.0."), ("isa_head.2.conv_bn.1.", "context.fuse.1."),
                 ("cls_head.", "classifier."), ("dsn_head.0.", "aux_head.0."), ("dsn_head.1.", "aux_head.1."),
                 ("dsn_head.3.", "aux_head.4.")]
        for theirs, ours in (("long_range_sa", "global_stage"), ("short_range_sa", "local_stage")):
            pairs += _block_prefixes(f"isa_head.2.stages.0.{theirs}.", f"context.ocp.{ours}.", names)
        return pairs
    names = dict(_OPENSEG_SA, layers=[("0", "1"), ("2", "3")], rho=[("W", "")])
    if arch == "asp_ocnet":
        return _openseg_asp_prefixes(names)
    pairs = [("oc_module_pre.0.", "context.reduce.0."), ("oc_module_pre.1.", "context.reduce.1."),
             ("oc_module.conv_bn_dropout.0.", "context.fuse.0."), ("oc_module.conv_bn_dropout.1.", "context.fuse.1."),
             ("cls.", "classifier."), ("dsn.0.", "aux_head.0."), ("dsn.1.", "aux_head.1."), ("dsn.2.", "aux_head.4.")]
    return pairs + _block_prefixes("oc_module.stages.0.", "context.ocp.", names)


def _openseg_asp_prefixes(names: dict) -> list[tuple[str, str]]:
    """openseg ``AspOCNet``: ``context = [conv, BNReLU, ASP_OC_Module]``, ``cls``, ``dsn``."""
    asp, ours = "context.2.", "context.aspoc."
    pairs = [("context.0.", "context.reduce.0."), ("context.1.", "context.reduce.1."),
             (f"{asp}context.0.", f"{ours}reduce.0."), (f"{asp}context.1.", f"{ours}reduce.1."),
             (f"{asp}context.2.conv_bn_dropout.0.", f"{ours}context_norm.0."),
             (f"{asp}conv2.", f"{ours}atrous.pointwise."),
             (f"{asp}conv_bn_dropout.0.", f"{ours}fuse.0."), (f"{asp}conv_bn_dropout.1.", f"{ours}fuse.1."),
             ("cls.", "classifier."), ("dsn.0.", "aux_head.0."), ("dsn.1.", "aux_head.1."), ("dsn.2.", "aux_head.4.")]
    pairs += [(f"{asp}conv{i + 3}.", f"{ours}atrous.dilated.{i}.") for i in range(3)]
    return pairs + _block_prefixes(f"{asp}context.2.stages.0.", f"{ours}ocp.", names)


def _mmseg_prefixes() -> list[tuple[str, str]]:
    names = {"query": "query_project.", "key": "key_project.", "value": "value_project",
             "layers": [("{i}.conv", "{i}.bn")], "rho": [("output_project.conv", ".0"), ("output_project.bn", ".1")]}
    names["layers"] = [("0.conv", "0.bn"), ("1.conv", "1.bn")]
    pairs = [("decode_head.in_conv.conv.", "context.reduce.0."), ("decode_head.in_conv.bn.", "context.reduce.1."),
             ("decode_head.out_conv.conv.", "context.fuse.0."), ("decode_head.out_conv.bn.", "context.fuse.1."),
             ("decode_head.conv_seg.", "classifier."), ("auxiliary_head.convs.0.conv.", "aux_head.0."),
             ("auxiliary_head.convs.0.bn.", "aux_head.1."), ("auxiliary_head.conv_seg.", "aux_head.4.")]
    for theirs, ours in (("global_relation", "global_stage"), ("local_relation", "local_stage")):
        pairs += _block_prefixes(f"decode_head.{theirs}.", f"context.ocp.{ours}.", names)
    return pairs


def _prefixes(source: str, arch: str) -> list[tuple[str, str]]:
    """``(their prefix, our prefix)`` pairs; keys under ``backbone.layer*`` keep their names."""
    _spec(source, arch)
    head = _openseg_prefixes(arch) if source == "openseg" else _mmseg_prefixes()
    return _STEM[source] + [("backbone.layer", "backbone.layer")] + head


def _rename(key: str, pairs: list[tuple[str, str]]) -> str | None:
    """The key under the longest matching prefix, or ``None`` when no prefix matches."""
    matches = [(a, b) for a, b in pairs if key.startswith(a)]
    if not matches:
        return None
    old, new = max(matches, key=lambda pair: len(pair[0]))
    return new + key[len(old):]


def _unwrap(checkpoint: str | os.PathLike | dict) -> dict[str, torch.Tensor]:
    """A flat state dict from a path or a dict (``state_dict`` entry, ``module.`` prefixes)."""
    if not isinstance(checkpoint, dict):  # the backbones' reader: weights_only, unwrapped, 'module.' stripped
        return read_state_dict(checkpoint)
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("checkpoint must be a state dict of tensors, or a dict with one under 'state_dict'")
    return {re.sub(r"^module\.", "", k): v for k, v in state.items()}


def convert_state_dict(state: dict[str, torch.Tensor], model: OCNet, source: str, arch: str) -> dict:
    """The source's state dict under our key names, for ``model`` (strict: raises on any mismatch).

    ``num_batches_tracked`` (absent from InPlace-ABN checkpoints, unused in ``eval()``) is
    filled with 0 when missing. For InPlace-ABN sources every BN weight becomes ``|γ| + ε``.

    Raises:
        ValueError: listing the keys that match nothing, are missing or have another shape.
    """
    pairs = _prefixes(source, arch)
    renamed = {}
    for key, value in state.items():
        new = _rename(key, pairs)
        renamed[new if new is not None else f"<unmatched> {key}"] = value
    target = model.state_dict()
    for key, value in target.items():
        if key.endswith("num_batches_tracked") and key not in renamed:
            renamed[key] = torch.zeros_like(value)
    problems = key_mismatches(renamed, target)
    if problems:
        raise ValueError(f"checkpoint does not fit {source}:{arch} with {model.num_classes} classes (our key "
                         f"names; '<unmatched>' marks source keys of no known layer): " + "; ".join(problems))
    if _spec(source, arch).abn:
        for name, module in model.named_modules():
            if isinstance(module, nn.BatchNorm2d):
                renamed[f"{name}.weight"] = renamed[f"{name}.weight"].abs() + _BN_EPS
    return renamed


def source_keys(model: OCNet, source: str, arch: str) -> dict[str, torch.Tensor]:
    """``model``'s weights under the source's key names (the inverse renaming; BN weights as
    stored, so for InPlace-ABN sources load them back only when they are positive and ≥ ε)."""
    pairs = [(ours, theirs) for theirs, ours in _prefixes(source, arch)]
    skip = _spec(source, arch).abn
    return {_rename(k, pairs): v for k, v in model.state_dict().items()
            if not (skip and k.endswith("num_batches_tracked"))}


def load_published(checkpoint: str | os.PathLike | dict, source: str, arch: str, num_classes: int,
                   base_width: int | None = None) -> OCNet:
    """Our OCNet holding a published checkpoint, in ``eval()``, with ``model.preprocess``.

    Args:
        checkpoint: a path or a state dict (optionally ``{"state_dict": ...}``, keys optionally
            ``module.``-prefixed).
        source: ``"openseg"`` or ``"mmseg"``.
        arch: openseg ``"isanet"``, ``"base_ocnet"``, ``"asp_ocnet"``; mmseg ``"isanet_r50-d8"``, ``"isanet_r101-d8"``.
        num_classes: 19 (Cityscapes) or 150 (ADE20K).
        base_width: backbone width; default: read from the checkpoint's
            ``backbone.layer1.0.conv1.weight`` (64 for every published model; smaller for tests).

    Returns:
        The model: ``model(model.preprocess(rgb_in_0_1))`` → logits ``[B, K, H, W]``.
    """
    state = _unwrap(checkpoint)
    _spec(source, arch)
    if base_width is None:
        first = state.get("backbone.layer1.0.conv1.weight")
        base_width = 64 if first is None else first.shape[0]
    model = build_published(source, arch, num_classes, base_width)
    # keep the checkpoint's precision (a float64 state dict gives a float64 model)
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(dtypes) == 1:
        model = model.to(dtypes.pop())
    model.load_state_dict(convert_state_dict(state, model, source, arch))
    return model.eval()
