"""Helpers shared by several test files (imported as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import subprocess

import torch


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


class RecordedOps:
    """The names of the aten operators run inside ``with RecordedOps() as ops:`` (``ops.names``),
    e.g. ``"addmm"``, ``"index_copy_"``: which of two paths with the same numbers a function took."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        names: list[str] = []

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                names.append(func.overloadpacket.__name__)
                return func(*args, **(kwargs or {}))

        self.names, self._mode = names, _Mode()

    def __enter__(self) -> "RecordedOps":
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)

    def count(self, name: str) -> int:
        return self.names.count(name)
