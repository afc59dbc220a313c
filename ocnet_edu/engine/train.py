"""Training OCNet with the paper's recipe (Sec. 4.2), on one process or many.

``python -m ocnet_edu train --config configs/synthetic.yaml [--resume] [key.sub=value ...]``, or
``torchrun --nproc_per_node=8 -m ocnet_edu train --config ...`` for data-parallel training.

The recipe: SGD with momentum 0.9 and weight decay, the poly learning rate
``lr · (1 − iter/max_iter)^0.9``, loss = cross-entropy (ignoring
:data:`~ocnet_edu.data.IGNORE_INDEX`) on the final output + 0.4 × cross-entropy on the auxiliary
output (:meth:`ocnet_edu.model.OCNet.loss`), optional OHEM, the augmentations of
:func:`ocnet_edu.data.transforms.paper_train_transforms`. Several processes run
DistributedDataParallel (NCCL on GPUs, gloo on the CPU); on GPUs BatchNorm becomes
``torch.nn.SyncBatchNorm``, the modern equivalent of the InPlace-ABN-sync the paper used.

Read top to bottom: :func:`setup` builds a :class:`TrainState` (model, optimizer, scheduler,
scaler) at iteration 0, :func:`resume_from` loads a checkpoint into it, :func:`parallelize` wraps
the model for DDP / ``torch.compile``, :func:`train_step` is one SGD step, :func:`save_checkpoint`
writes everything a resumed run needs, and :func:`train` runs the loop.

A run directory holds ``config.yaml`` (the final config), ``metrics.csv`` (one row per iteration),
``checkpoint.pt`` (the latest, written atomically) and ``final.pt`` (the weights at the end); both
``.pt`` files carry a content checksum and the config's ``model`` section
(:mod:`ocnet_edu.engine.checkpoint`). Training refuses to start from scratch in a folder that
already holds something unless told to resume or overwrite (:mod:`ocnet_edu.engine.run_dir`).
Training is exactly resumable: the data order of every epoch is a function of (seed, epoch), the
augmentation of every sample a function of (seed, epoch, index), and the checkpoint carries
model, optimizer, scheduler, scaler, iteration and the RNG states, so a run stopped and resumed
ends with the same weights as one that never stopped.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ocnet_edu.config import Config, save_config, validate_config
from ocnet_edu.engine import checkpoint as ckpt
from ocnet_edu.engine import distributed, run_dir
from ocnet_edu.engine.builders import build_model, build_optimizer, build_scheduler, build_train_dataset, loss_options
from ocnet_edu.engine.train_log import TrainLog

__all__ = ["CHECKPOINT", "FINAL", "METRICS", "TrainState", "epoch_batches", "parallelize", "resume_from",
           "save_checkpoint", "setup", "train", "train_step"]

CHECKPOINT = "checkpoint.pt"
FINAL = "final.pt"
METRICS = "metrics.csv"


@dataclass
class TrainState:
    """Everything a training step changes, and a checkpoint holds.

    ``model`` is the bare model (what is saved); ``runner`` runs the forward pass: the model
    itself, or its DistributedDataParallel / ``torch.compile`` wrapper (:func:`parallelize`).
    ``amp_dtype`` is the autocast dtype (``None``: float32) and ``loss_options`` the keyword
    options of :meth:`~ocnet_edu.model.OCNet.loss`. ``iteration`` counts the steps taken.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None = None
    loss_options: dict[str, Any] = field(default_factory=dict)
    channels_last: bool = False
    iteration: int = 0
    runner: nn.Module | None = None
    model_config: dict[str, Any] = field(default_factory=dict)


def setup(cfg: Config, ctx: distributed.DistributedContext) -> TrainState:
    """The state at iteration 0: the seeded model on ``ctx.device`` (SyncBatchNorm when several
    GPUs), SGD, the poly scheduler and the gradient scaler (active for float16 autocast only)."""
    _seed_everything(cfg.runtime.seed)  # the same initial weights on every rank
    model = build_model(cfg)
    if ctx.distributed and ctx.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(ctx.device)
    if cfg.runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model)
    amp_dtype = _amp_dtype(cfg, ctx.device)
    return TrainState(model=model, optimizer=optimizer, scheduler=build_scheduler(cfg, optimizer),
                      scaler=torch.amp.GradScaler(ctx.device.type, enabled=amp_dtype == torch.float16),
                      amp_dtype=amp_dtype, loss_options=loss_options(cfg, ctx.device),
                      channels_last=cfg.runtime.channels_last, runner=model, model_config=ckpt.model_config(cfg))


def resume_from(state: TrainState, path: Path, ctx: distributed.DistributedContext) -> bool:
    """Load the checkpoint at ``path`` into ``state`` (weights, optimizer, scheduler, scaler,
    iteration) and restore this rank's RNG states; ``False`` if there is no checkpoint.

    Raises:
        ocnet_edu.engine.checkpoint.CheckpointError: the file is corrupted, is not a training
            checkpoint (e.g. a ``final.pt``) or was trained with another ``model`` config.
    """
    if not path.exists():
        return False
    saved = ckpt.load(path, map_location=ctx.device)
    ckpt.require_training_checkpoint(saved, path)
    ckpt.check_model_config(saved, state.model_config, path)
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.scaler.load_state_dict(saved["scaler"])
    ckpt.set_rng_state(saved["rng"][min(ctx.rank, len(saved["rng"]) - 1)])
    state.iteration = int(saved["iteration"])
    return True


def parallelize(state: TrainState, cfg: Config, ctx: distributed.DistributedContext) -> None:
    """Set ``state.runner``: DistributedDataParallel over the processes, then ``torch.compile``
    if ``cfg.runtime.compile``; the bare ``state.model`` is kept for saving."""
    runner = state.model
    if ctx.distributed:
        runner = nn.parallel.DistributedDataParallel(
            runner, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)
    if cfg.runtime.compile:
        runner = torch.compile(runner)
    state.runner = runner


def train_step(state: TrainState, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
    """One SGD step on a batch (images ``[B, 3, H, W]``, labels ``[B, H, W]``, on the model's device).

    Forward under autocast, :meth:`~ocnet_edu.model.OCNet.loss`, (scaled) backward, optimizer
    and scheduler step. Returns this process's loss and the learning rate the step used.

    Raises:
        FloatingPointError: the loss is not finite.
    """
    if state.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    device_type = images.device.type
    with torch.autocast(device_type, dtype=state.amp_dtype or torch.float32, enabled=state.amp_dtype is not None):
        loss = state.model.loss(state.runner(images), labels, **state.loss_options)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the loss became {loss.item()} at iteration {state.iteration}")
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.step(state.optimizer)
    state.scaler.update()
    lr = state.optimizer.param_groups[0]["lr"]
    state.scheduler.step()
    state.iteration += 1
    return loss, lr


def save_checkpoint(state: TrainState, path: Path) -> None:
    """Write ``state`` and every rank's RNG state (gathered) to ``path`` on rank 0, atomically."""
    rng = distributed.all_gather_object(ckpt.rng_state())
    if distributed.is_main():
        ckpt.atomic_save({
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict(),
            "iteration": state.iteration,
            "rng": rng,
            ckpt.MODEL_CONFIG: state.model_config,
        }, path)
    distributed.barrier()


def epoch_batches(num_samples: int, batch_size: int, world_size: int, rank: int, seed: int, epoch: int) -> list[list[int]]:
    """This rank's batches of one epoch: a seeded permutation, cut into global batches of
    ``batch_size`` (the remainder is dropped), each split across ranks by striding.

    Raises:
        ValueError: ``batch_size`` or ``world_size`` below 1, a batch not divisible by the
            processes, or fewer samples than one batch (never an empty list, which would make
            the training loop spin without end).

    The union over ranks of the ``s``-th batches is the ``s``-th global batch of a single process
    with the same seed, which is what makes one and several processes comparable.
    """
    if batch_size < 1 or world_size < 1:
        raise ValueError(f"schedule.batch_size must be >= 1 and the world size >= 1, got {batch_size} and {world_size}")
    if batch_size % world_size:
        raise ValueError(f"the global batch size {batch_size} is not divisible by the {world_size} processes")
    steps = num_samples // batch_size
    if steps < 1:
        raise ValueError(f"the dataset has {num_samples} samples, fewer than one batch of {batch_size}")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_samples, generator=generator)[: steps * batch_size].tolist()
    return [order[s * batch_size + rank: (s + 1) * batch_size: world_size] for s in range(steps)]


def train(cfg: Config, resume: bool = False, progress: bool = True, stop_after: int | None = None,
          overwrite: bool = False) -> dict[str, Any]:
    """Train ``cfg`` and return a summary (final loss, iterations, run directory, world size).

    Args:
        cfg: the full configuration (see :mod:`ocnet_edu.config`; validated again here).
        resume: continue from ``<out_dir>/checkpoint.pt`` if it exists.
        progress: show a tqdm progress bar (on rank 0 only).
        stop_after: stop (with a checkpoint) once this many iterations are done, as if the job
            were pre-empted; ``--resume`` continues it (the summary then has ``"stopped": True``).
            ``None`` trains to ``max_iters``.
        overwrite: start from scratch even if ``out_dir`` holds a run (its files are deleted).

    Raises:
        ocnet_edu.engine.run_dir.RunDirectoryError: ``out_dir`` is not empty and neither
            ``resume`` nor ``overwrite`` is set.
        ocnet_edu.engine.distributed.DistributedError: another process stopped answering for
            ``runtime.dist_timeout`` minutes.
    """
    validate_config(cfg)
    out_dir = Path(cfg.runtime.out_dir)
    run_dir.check_run_directory(out_dir, resume, overwrite)  # every rank, before any rank writes
    if distributed.is_main() and overwrite and not resume:
        run_dir.clear_run_directory(out_dir)
    elif distributed.is_main():
        run_dir.remove_stale_temporaries(out_dir)  # left by a process killed while writing
    ctx = distributed.setup(cfg.runtime.device, cfg.runtime.dist_timeout)
    try:
        with distributed.explain_failures("training"):
            return _run(cfg, ctx, resume, progress, stop_after)
    finally:
        if ctx.is_main:
            run_dir.remove_stale_temporaries(out_dir)
        distributed.cleanup()


def _run(cfg: Config, ctx: distributed.DistributedContext, resume: bool, progress: bool,
         stop_after: int | None) -> dict[str, Any]:
    """Set up (or resume), then step until ``max_iters`` or ``stop_after``, checkpointing."""
    out_dir, max_iters = Path(cfg.runtime.out_dir), cfg.schedule.max_iters
    state = setup(cfg, ctx)
    if resume and not resume_from(state, out_dir / CHECKPOINT, ctx) and ctx.is_main:
        print(f"no checkpoint in {out_dir}; starting from scratch")
    if ctx.is_main:
        save_config(cfg, out_dir / "config.yaml")
    parallelize(state, cfg, ctx)
    dataset = build_train_dataset(cfg)
    log = TrainLog(out_dir / METRICS if ctx.is_main else None, state.iteration, max_iters, cfg.schedule.batch_size,
                   progress and ctx.is_main)
    _set_train_mode(state.model, cfg.runtime.freeze_bn)
    summary = {"final_loss": math.nan, "iterations": max_iters, "out_dir": str(out_dir), "world_size": ctx.world_size}
    if state.iteration >= max_iters:  # resuming a finished run: report its last logged loss
        summary.update(final_loss=log.last_loss, already_finished=True)
    for images, labels in _batches(dataset, cfg, ctx, state.iteration):
        loss, lr = train_step(state, images.to(ctx.device, non_blocking=True), labels.to(ctx.device, non_blocking=True))
        summary["final_loss"] = distributed.all_reduce_mean(loss).item()
        log.step(state.iteration, summary["final_loss"], lr)
        stopping = stop_after is not None and state.iteration >= stop_after
        if state.iteration % cfg.schedule.checkpoint_every == 0 or state.iteration == max_iters or stopping:
            save_checkpoint(state, out_dir / CHECKPOINT)
        if stopping and state.iteration < max_iters:
            log.close()
            return {**summary, "iterations": state.iteration, "stopped": True}
    log.close()
    if ctx.is_main:
        ckpt.atomic_save({"model": state.model.state_dict(), "iteration": max_iters,
                          ckpt.MODEL_CONFIG: state.model_config}, out_dir / FINAL)
    distributed.barrier()
    return summary


def _batches(dataset: Dataset, cfg: Config, ctx: distributed.DistributedContext, start: int) -> Iterator:
    """Yield this rank's ``(images, labels)`` for iterations ``start .. max_iters - 1``, epoch after epoch."""
    batch_size, max_iters = cfg.schedule.batch_size, cfg.schedule.max_iters
    steps_per_epoch = len(dataset) // batch_size
    epoch, step = divmod(start, steps_per_epoch) if steps_per_epoch else (0, 0)
    iteration = start
    while iteration < max_iters:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        batches = epoch_batches(len(dataset), batch_size, ctx.world_size, ctx.rank, cfg.runtime.seed, epoch)
        loader = DataLoader(
            dataset,
            batch_sampler=batches[step: step + max_iters - iteration],
            num_workers=cfg.runtime.workers,
            pin_memory=ctx.device.type == "cuda",
            # an explicit generator: creating the loader must not draw from the global RNG,
            # or resuming would change the dropout masks that follow
            generator=torch.Generator().manual_seed(cfg.runtime.seed + epoch),
        )
        before = iteration
        for images, labels in loader:
            yield images, labels
            iteration += 1
        if iteration == before:  # cannot happen with a valid config; never spin without end
            raise RuntimeError(f"epoch {epoch} gave no batch (dataset of {len(dataset)}, batch {batch_size})")
        epoch, step = epoch + 1, 0


def _seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _amp_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``cfg.runtime`` (``None`` without AMP); float16 needs a GPU."""
    if not cfg.runtime.amp:
        return None
    if cfg.runtime.amp_dtype not in ("bfloat16", "float16"):
        raise ValueError(f"runtime.amp_dtype must be 'bfloat16' or 'float16', got {cfg.runtime.amp_dtype!r}")
    if device.type == "cpu" and cfg.runtime.amp_dtype == "float16":
        raise ValueError("float16 autocast needs a GPU; use runtime.amp_dtype=bfloat16 on the CPU")
    return getattr(torch, cfg.runtime.amp_dtype)


def _set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """``model.train()``, except that with ``freeze_bn`` the BatchNorm layers stay in eval mode."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
