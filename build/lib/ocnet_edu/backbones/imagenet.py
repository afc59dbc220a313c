"""Load ImageNet weights into a backbone from a local file (never from the internet).

The rules, in order:

1. A missing file raises ``FileNotFoundError`` naming the path.
2. The file is read with ``torch.load(path, map_location="cpu", weights_only=True)``; a file
   that is not a readable PyTorch checkpoint raises ``ValueError`` naming the path.
3. A checkpoint that is a dict with a ``"state_dict"`` or ``"model"`` entry is unwrapped;
   otherwise it must itself be a mapping from names to tensors.
4. A ``"module."`` prefix (left by ``DataParallel``/``DistributedDataParallel``) is stripped.
5. Keys starting with one of ``ignore_prefixes`` (classification heads: ResNet ``fc.``; HRNet
   ``incre_modules.``, ``downsamp_modules.``, ``final_layer.``, ``classifier.``) are dropped.
6. Any other mismatch is an error: a ``ValueError`` lists the counts and (up to 10 of) the
   missing keys, the unexpected keys and the shape mismatches. The only tolerated omission is
   BatchNorm's ``num_batches_tracked`` counter, which checkpoints saved before PyTorch 0.4 (such
   as torchvision's original 2017 ResNet files) do not contain; the module's counter is then
   left as it is (it only matters for ``BatchNorm2d(momentum=None)``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

__all__ = ["LoadReport", "key_mismatches", "read_state_dict", "load_pretrained", "RESNET_IGNORED_PREFIXES", "HRNET_IGNORED_PREFIXES"]

RESNET_IGNORED_PREFIXES: tuple[str, ...] = ("fc.",)
HRNET_IGNORED_PREFIXES: tuple[str, ...] = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")

_MAX_LISTED = 10
_TOLERATED_MISSING_SUFFIX = "num_batches_tracked"


class LoadReport(NamedTuple):
    """Summary of :func:`load_pretrained`.

    Attributes:
        loaded: number of tensors copied into the module.
        ignored: keys dropped because of ``ignore_prefixes`` (sorted).
        kept_default: module keys absent from the file but tolerated (``num_batches_tracked``).
    """

    loaded: int
    ignored: tuple[str, ...]
    kept_default: tuple[str, ...]


def _listing(title: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    more = f", ... ({len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return f"{len(keys)} {title}: {shown}{more}"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict (rules 1–4 of the module doc).

    Args:
        path: local ``.pth``/``.pt`` file.

    Returns:
        The state dict on the CPU, with any ``"module."`` prefix removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {str(path)!r}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt/unsafe files
        raise ValueError(f"could not read {str(path)!r} as a PyTorch checkpoint: {error}") from error
    if isinstance(checkpoint, Mapping):
        for wrapper in ("state_dict", "model"):
            if wrapper in checkpoint and isinstance(checkpoint[wrapper], Mapping):
                checkpoint = checkpoint[wrapper]
                break
    if not isinstance(checkpoint, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in checkpoint.items()
    ):
        raise ValueError(
            f"{str(path)!r} does not hold a state dict (a mapping from parameter names to tensors, "
            "possibly under a 'state_dict' or 'model' key)"
        )
    prefix = "module."
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in checkpoint.items()}


def key_mismatches(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> list[str]:
    """What keeps ``source`` from loading into a module whose state dict is ``target``: one
    listing each of missing keys, unexpected keys and shape mismatches (empty if it fits)."""
    missing = [k for k in target if k not in source]
    unexpected = [k for k in source if k not in target]
    mismatched = [f"{k} (file {tuple(source[k].shape)} vs model {tuple(target[k].shape)})"
                  for k in target if k in source and source[k].shape != target[k].shape]
    listed = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
    return [_listing(title, keys) for title, keys in listed if keys]


def load_pretrained(
    module: nn.Module,
    path: str | os.PathLike,
    ignore_prefixes: Iterable[str] = RESNET_IGNORED_PREFIXES,
) -> LoadReport:
    """Copy the weights stored in ``path`` into ``module`` (strict, apart from ``ignore_prefixes``).

    Args:
        module: the backbone to fill in place (on any device; tensors are copied to it).
        path: local checkpoint file.
        ignore_prefixes: key prefixes of the file *and* of the module that take no part in the
            comparison (classification heads).

    Returns:
        A :class:`LoadReport`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be read, is not a state dict, or its keys/shapes differ from
            the module's (the message lists them).
    """
    prefixes = tuple(ignore_prefixes)
    source = read_state_dict(path)
    ignored = tuple(sorted(k for k in source if k.startswith(prefixes)))
    source = {k: v for k, v in source.items() if not k.startswith(prefixes)}
    target = {k: v for k, v in module.state_dict().items() if not k.startswith(prefixes)}
    kept_default = [k for k in target if k not in source and k.endswith(_TOLERATED_MISSING_SUFFIX)]
    problems = key_mismatches(source, {k: v for k, v in target.items() if k not in kept_default})
    if problems:
        raise ValueError(f"checkpoint {str(path)!r} does not match {type(module).__name__}: " + "; ".join(problems))
    result = module.load_state_dict(source, strict=False)
    leftover = [k for k in result.missing_keys if not k.startswith(prefixes) and k not in kept_default]
    if leftover or result.unexpected_keys:  # cannot happen after the checks above
        raise RuntimeError(f"internal error loading {path}: {leftover} {result.unexpected_keys}")
    return LoadReport(loaded=len(source), ignored=ignored, kept_default=tuple(kept_default))
