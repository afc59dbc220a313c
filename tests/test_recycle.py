"""Recycling a pass's dead buffers (``ocnet_edu.nn.recycle``, issue 17): what is handed out again,
what is never taken, and that nothing changes outside a ``recycling`` block."""

import contextvars

import pytest
import torch

from ocnet_edu.nn import recycle
from ocnet_edu.nn.recycle import Recycler


def test_a_request_takes_a_held_buffer_of_exactly_its_size_and_releases_the_others():
    recycler = Recycler()
    like = torch.empty(0)
    six, other_six, five = torch.empty(2, 3), torch.empty(6), torch.empty(5)
    for tensor in (five, six, other_six):
        recycler.give(tensor)
    out = recycler.empty((3, 2), like=like)
    assert out.shape == (3, 2) and out.data_ptr() == six.data_ptr()      # the first of its size, reshaped
    assert recycler.held == [] and recycler.reused_bytes == 6 * 4      # the others freed
    recycler.give(five)
    miss = recycler.empty((7,), like=like)
    assert miss.data_ptr() not in (five.data_ptr(), six.data_ptr()) and recycler.held == []
    assert recycler.reused_bytes == 24                                   # a miss reuses nothing


@pytest.mark.parametrize("like", [torch.empty(0, dtype=torch.float64), torch.empty(0, device="meta")])
def test_only_the_same_dtype_and_device_are_reused(like):
    recycler = Recycler()
    recycler.give(torch.empty(4))
    out = recycler.empty((4,), like=like)
    assert out.dtype == like.dtype and out.device == like.device and recycler.reused_bytes == 0


def test_views_protected_duplicate_and_empty_tensors_are_never_held():
    base = torch.empty(4, 6)
    protected = torch.empty(3, 2)
    recycler = Recycler(protected=[protected[1:]])  # any view of the protected storage protects it all
    for refused in (base[1:], base[:, :3], base.t(), base.view(-1)[2:], protected, torch.empty(0)):
        recycler.give(refused)
    assert recycler.held == []
    recycler.give(base)
    recycler.give(base.view(-1))   # the same storage again
    assert recycler.held == [base]
    recycler.release()
    assert recycler.held == []


def test_outside_a_recycling_block_nothing_is_held_or_reused():
    dead = torch.empty(8)
    recycle.give(dead)
    recycle.release()
    out = recycle.empty((8,), like=dead)
    assert out.shape == (8,) and out.data_ptr() != dead.data_ptr()


def test_a_recycling_block_is_its_own_and_ends_with_the_block():
    with recycle.recycling() as outer:
        dead = torch.empty(8)
        recycle.give(dead)
        assert outer.held == [dead]
        with recycle.recycling() as inner:
            assert inner is not outer and inner.held == []
            assert recycle.empty((8,), like=dead).data_ptr() != dead.data_ptr()
        assert recycle.empty((2, 4), like=dead).data_ptr() == dead.data_ptr() and outer.reused_bytes == 32
        recycle.give(dead)
        recycle.release()
        assert outer.held == []
        # another context (a thread or task) does not see this block's recycler
        assert contextvars.Context().run(lambda: recycle._CURRENT.get()) is None
    recycle.give(torch.empty(8))
    assert outer.held == [] and recycle._CURRENT.get() is None
