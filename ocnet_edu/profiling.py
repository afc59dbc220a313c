"""Counting what a forward pass costs without running it: FLOPs and peak tensor memory.

The library's one FLOP counter. Both measures work on ``meta`` tensors (shapes only, nothing
computed), so they can be taken at the paper's full sizes on any machine.

* :func:`count_flops` uses :class:`torch.utils.flop_counter.FlopCounterMode`: 2 FLOPs per
  multiply-add of convolutions and matrix products (``conv``, ``mm``, ``bmm``, ``addmm``,
  ``baddbmm``, fused attention; ``einsum`` lowers to ``bmm``); element-wise work, softmax,
  normalisation and pooling are not counted. :func:`count_gflops` is the same count for a
  module and an input shape, in GFLOPs (how Table 4 reports it). BN in eval mode, einops
  rearrangements, ``F.interpolate``, ``adaptive_avg_pool2d`` and masking all run on ``meta``
  tensors, so a 2048-channel, 128×128 input costs no time or memory.
* :func:`peak_tensor_bytes` follows every tensor an operation creates and frees, and reports the
  largest total alive at once — the peak *extra* memory of the pass (parameters and inputs
  excluded). It counts storage bytes, not what a GPU caching allocator reports (no alignment,
  caching or kernel workspaces), so it is an analytic lower bound to compare with measurements.
  :func:`product_shapes` records the shape of every matrix product a pass runs (to time those
  products alone, the ceiling of a module's throughput).
  These rely on PyTorch's dispatch-mode hooks (``torch.utils._python_dispatch``), which are
  public in practice but underscored; they are kept here, in one place, for that reason.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

__all__ = ["count_flops", "count_gflops", "flop_counter", "peak_tensor_bytes", "PeakTensorMemory", "product_shapes",
           "saved_tensor_bytes"]


def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


#: FLOP formulas FlopCounterMode lacks (torch 2.13): the CPU flash-attention kernel that
#: ``scaled_dot_product_attention`` picks for 4-D inputs on the CPU is otherwise counted as 0.
EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops}


def flop_counter() -> FlopCounterMode:
    """A silent :class:`FlopCounterMode` that also counts the CPU flash-attention kernel."""
    return FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)


def count_flops(fn: Callable[..., Any], *inputs: torch.Tensor) -> int:
    """FLOPs that :func:`flop_counter` records for ``fn(*inputs)`` (no gradients)."""
    with torch.no_grad(), flop_counter() as counter:
        fn(*inputs)
    return counter.get_total_flops()


def count_gflops(module: torch.nn.Module, input_shape: Sequence[int], device: str | torch.device = "meta") -> float:
    """GFLOPs (2 per multiply–add) of one inference forward pass of ``module`` on ``input_shape``.

    The module is deep-copied, moved to ``device`` and put in eval mode, so the caller's module
    is left untouched; the input is zeros of ``input_shape``. On ``"meta"`` nothing is computed.

    Args:
        module: any module taking one tensor ``[B, C, H, W]``.
        input_shape: e.g. ``(1, 2048, 128, 128)`` (Table 4's input).
        device: ``"meta"`` (default) or a real device (then the forward pass really runs).

    Returns:
        :func:`count_flops` / 1e9.
    """
    device = torch.device(device)
    module = copy.deepcopy(module).to(device).eval()
    return count_flops(module, torch.zeros(tuple(input_shape), device=device)) / 1e9


#: matrix products :func:`product_shapes` records (and ``linear``, which inference mode keeps whole)
PRODUCT_OPS = ("mm", "addmm", "bmm", "baddbmm")


class _ProductRecorder(TorchDispatchMode):
    """Appends ``(batch, m, k, n)`` of every matrix product to ``shapes``."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, int, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name == "linear":  # not decomposed into addmm under inference_mode
            rows, weight = args[0], args[1]
            self.shapes.append((1, rows.numel() // rows.shape[-1], rows.shape[-1], weight.shape[0]))
        elif name in PRODUCT_OPS:
            first, second = args[-2], args[-1]  # addmm / baddbmm: (bias, a, b)
            batch = first.shape[0] if first.dim() == 3 else 1
            self.shapes.append((batch, first.shape[-2], first.shape[-1], second.shape[-1]))
        return func(*args, **(kwargs or {}))


def product_shapes(fn: Callable[[], Any]) -> list[tuple[int, int, int, int]]:
    """The matrix products ``fn()`` runs, as ``(batch, m, k, n)``, in order (every ``linear``, ``mm``,
    ``addmm``, ``bmm`` and ``baddbmm``; biases and transposed operands are not kept)."""
    with _ProductRecorder() as recorder:
        fn()
    return recorder.shapes


class PeakTensorMemory(TorchDispatchMode):
    """Inside the context, track the bytes of tensor storage created and not yet freed.

    Attributes:
        current: bytes alive now; peak: the largest value ``current`` reached.
        at_peak: with ``record=True``, what was alive when the peak was reached: one
            ``(operation, shape, bytes)`` per storage, the operation that created it.
    """

    def __init__(self, existing: tuple[torch.Tensor, ...] = (), record: bool = False) -> None:
        super().__init__()
        # storages that exist before the pass (inputs, parameters): views of them cost nothing
        self.existing = {t.untyped_storage()._cdata for t in existing}
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        self.record = record
        self.origin: dict[int, tuple[str, tuple[int, ...]]] = {}
        self.at_peak: list[tuple[str, tuple[int, ...], int]] = []

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key)
        self.origin.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = storage._cdata
                if key not in self.live and key not in self.existing:  # a view shares its base's storage
                    self.live[key] = storage.nbytes()
                    self.current += storage.nbytes()
                    if self.record:
                        self.origin[key] = (func.__name__.split(".")[0], tuple(tensor.shape))
                        if self.current > self.peak:
                            self.at_peak = [(*self.origin[k], n) for k, n in self.live.items()]
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._free, key)
        return out


def peak_tensor_bytes(fn: Callable[..., Any], *inputs: torch.Tensor) -> int:
    """Peak bytes of tensors alive at once while ``fn(*inputs)`` runs (no gradients).

    Storage that exists before the call — the inputs and, if ``fn`` is a module, its parameters
    and buffers — is not counted, nor are views of it.
    """
    existing = tuple(inputs)
    if isinstance(fn, torch.nn.Module):
        existing += tuple(fn.parameters()) + tuple(fn.buffers())
    with torch.no_grad(), PeakTensorMemory(existing) as tracker:
        fn(*inputs)
    return tracker.peak


def saved_tensor_bytes(fn: Callable[..., Any], *inputs: torch.Tensor) -> int:
    """Bytes of the distinct storages a forward pass of ``fn(*inputs)`` leaves held for backward.

    What a training step holds between its forward and its backward pass, beyond the parameters
    and the inputs (not counted, nor views of them): every storage created during the pass and
    still alive after it — the tensors autograd saved, and those that
    :func:`torch.utils.checkpoint.checkpoint` keeps for a selective recomputation — except the
    output, which counts only when autograd saved it (e.g. the output of a final ReLU).
    """
    existing = tuple(inputs)
    if isinstance(fn, torch.nn.Module):
        existing += (*fn.parameters(), *fn.buffers())
    packed: set[int] = set()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        packed.add(tensor.untyped_storage()._cdata)
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with PeakTensorMemory(existing) as tracker:
            out = fn(*inputs)
        outputs = {t.untyped_storage()._cdata for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)}
        return sum(n for key, n in tracker.live.items() if key not in outputs or key in packed)
