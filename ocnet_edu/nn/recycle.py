"""Handing a pass's dead intermediates out again, so that the CPU does not fault their memory in anew.

Why: on Linux the C library's ``malloc`` serves a block of 32 MiB or more with a fresh ``mmap``
and unmaps it when it is freed; smaller blocks come from the heap, whose free top is also given
back to the kernel past a threshold. A new tensor of that size is therefore new memory, and the
first write to each of its 4 KiB pages is a page fault in which the kernel zeroes the page. ISA's
default inference pass on a ``1×512×128×256`` map makes twenty 32 MiB tensors one after the other:
640 MiB of page faults per pass, which on the benchmark's (virtual) machine cost about as much time
as a third of the pass's matrix products (the efficiency chapter measures both). PyTorch's CUDA
allocator keeps freed blocks for reuse; its CPU allocator does not.

Inside :func:`recycling`, :func:`empty` hands out a dead buffer of exactly the requested size when
one is held, and :func:`give` hands a dead tensor back. **The policy keeps the peak memory of the
pass as it was:** every allocation either takes a held buffer or is made after every held buffer
has been freed (:func:`release`, called by :func:`empty` and before any allocation the pass does not
make through :func:`empty`), so at no allocation is more memory held than without recycling.

Only what a function made itself may be given back, and only once nothing will read it again: a
tensor given back is overwritten by the next request of its size. :func:`give` refuses views, and
tensors sharing storage with the ``protected`` tensors (the caller's input). Outside
:func:`recycling` (the default, and always with autograd) :func:`empty` is ``new_empty`` and
:func:`give` does nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Sequence

import torch

__all__ = ["Recycler", "empty", "give", "recycling", "release"]


class Recycler:
    """Dead buffers of one pass, for the next request of exactly their size and type.

    Attributes:
        held: buffers given back and not yet handed out or released.
        reused_bytes: bytes handed out again so far (what recycling saved from new memory).
    """

    def __init__(self, protected: Sequence[torch.Tensor] = ()) -> None:
        self.held: list[torch.Tensor] = []
        self.protected = {t.untyped_storage().data_ptr() for t in protected}
        self.reused_bytes = 0

    def empty(self, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` (dtype and device of ``like``): a held buffer of the
        same size if there is one; every other held buffer is released first."""
        numel = math.prod(shape)
        match = next((t for t in self.held if t.numel() == numel and t.dtype == like.dtype and t.device == like.device),
                     None)
        self.held.clear()
        if match is None:
            return like.new_empty(tuple(shape))
        self.reused_bytes += numel * match.element_size()
        return match.view(tuple(shape))

    def give(self, tensor: torch.Tensor) -> None:
        """Hold ``tensor`` for reuse if it owns all of its storage, is not protected and not held already."""
        storage = tensor.untyped_storage()
        whole = (tensor.is_contiguous() and tensor.storage_offset() == 0
                 and storage.nbytes() == tensor.numel() * tensor.element_size())
        known = storage.data_ptr() in self.protected or any(
            held.untyped_storage().data_ptr() == storage.data_ptr() for held in self.held)
        if whole and tensor.numel() and not known:
            self.held.append(tensor)

    def release(self) -> None:
        """Free every held buffer (before an allocation made elsewhere)."""
        self.held.clear()


_CURRENT: contextvars.ContextVar[Recycler | None] = contextvars.ContextVar("ocnet_edu_recycler", default=None)


@contextlib.contextmanager
def recycling(protected: Sequence[torch.Tensor] = ()) -> Iterator[Recycler]:
    """Recycle inside the block (this thread or task only); ``protected``: tensors never given back."""
    token = _CURRENT.set(Recycler(protected))
    try:
        yield _CURRENT.get()
    finally:
        _CURRENT.reset(token)


def empty(shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """``like.new_empty(shape)``, or a recycled buffer inside :func:`recycling`."""
    recycler = _CURRENT.get()
    return like.new_empty(tuple(shape)) if recycler is None else recycler.empty(shape, like)


def give(*tensors: torch.Tensor) -> None:
    """Hand dead tensors back (inside :func:`recycling`; nothing otherwise)."""
    recycler = _CURRENT.get()
    if recycler is not None:
        for tensor in tensors:
            recycler.give(tensor)


def release() -> None:
    """Free the held buffers: call it before an allocation not made with :func:`empty`."""
    recycler = _CURRENT.get()
    if recycler is not None:
        recycler.release()
