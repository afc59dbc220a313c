"""Helpers shared by several test files (imported as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

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
