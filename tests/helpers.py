"""Helpers shared by several test files (imported as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import subprocess

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ocnet_edu.engine import distributed


def randomize_batch_norm(module: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BN running statistics and affine parameters, so that eval mode is not the identity."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return module


def git(*args: str, cwd) -> str:
    """Run ``git *args`` in ``cwd`` (failing the test on an error); its stripped standard output."""
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


class RecordedOps(TorchDispatchMode):
    """The names of the aten operators run inside ``with RecordedOps() as ops:`` (``ops.names``),
    e.g. ``"addmm"``, ``"index_copy_"``: which of two paths with the same numbers a function took."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))

    def count(self, name: str) -> int:
        return self.names.count(name)


class CPUTensorCreations(TorchDispatchMode):
    """The aten operators run inside ``with CPUTensorCreations() as created:`` that returned a CPU
    tensor (``created.ops``): with inputs on ``meta`` (a stand-in for a GPU), none should."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in tree_flatten(out)[0]):
            self.ops.append(str(func))
        return out


def stand_in_group(monkeypatch, rank: int, size: int, backend: str = "gloo") -> list:
    """A stand-in process group of ``ocnet_edu.engine.distributed`` (this process ``rank`` of ``size``, on
    ``backend``), so that one process can check what several would do; returns the list of the barriers
    it is asked for."""
    calls = []
    monkeypatch.setattr(distributed, "_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda *args: size)
    monkeypatch.setattr(distributed.dist, "get_rank", lambda *args: rank)
    monkeypatch.setattr(distributed.dist, "get_backend", lambda *args: backend)
    monkeypatch.setattr(distributed.dist, "monitored_barrier", lambda **kw: calls.append(("monitored_barrier", kw)))
    monkeypatch.setattr(distributed.dist, "barrier", lambda *args, **kw: calls.append(("barrier", args, kw)))
    return calls
