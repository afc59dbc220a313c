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
ends with the same weights as one that never stopped -- **on the CPU**. On CUDA the same data,
augmentations, dropout masks and optimizer state come back, but cuDNN's convolution algorithms
and the backward of bilinear upsampling (atomic adds) are not deterministic, so two CUDA runs,
resumed or not, drift apart in the last bits and then further. ``runtime.deterministic=true``
(:func:`backend_flags`) removes what PyTorch can (cuDNN, cuBLAS) at a cost that ``make gpu-check``
measures; the operations without a deterministic CUDA kernel still warn and still differ.

On GPUs: the loss is read back to the host every ``runtime.log_every`` steps (:func:`read_loss`),
a non-finite loss on any process stops every process, ``cudnn.benchmark`` is on for the fixed-size
crops, ``runtime.amp_dtype=auto`` is float16 where bfloat16 is only emulated, and
``torchrun --nproc_per_node=1`` already runs the process-group path (DDP, SyncBatchNorm).
"""

from __future__ import annotations

import math
import os
import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ocnet_edu.config import Config, save_config, validate_config
from ocnet_edu.engine import checkpoint as ckpt
from ocnet_edu.engine import distributed, run_dir
from ocnet_edu.engine.builders import build_model, build_optimizer, build_scheduler, build_train_dataset, loss_options
from ocnet_edu.engine.loader import epoch_batches, train_loader
from ocnet_edu.engine.train_log import TrainLog

__all__ = ["CHECKPOINT", "FINAL", "METRICS", "TrainState", "backend_flags", "epoch_batches", "parallelize",
           "read_loss", "resume_from", "save_checkpoint", "setup", "train", "train_step"]

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

    What the steps since the last :func:`read_loss` left on the device (no host sync per step):
    ``loss_sum`` (scalar, the sum of their losses), ``loss_steps`` (how many) and
    ``first_nonfinite`` (int64 scalar: the first iteration, 1-based as logged, whose loss was not
    finite on this process; 0 if none).
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
    loss_sum: torch.Tensor | None = None
    loss_steps: int = 0
    first_nonfinite: torch.Tensor | None = None
    model_config: dict[str, Any] = field(default_factory=dict)


def setup(cfg: Config, ctx: distributed.DistributedContext) -> TrainState:
    """The state at iteration 0: the seeded model on ``ctx.device`` (SyncBatchNorm when a process
    group runs on GPUs), SGD, the poly scheduler and the gradient scaler (float16 autocast only).

    Every rank builds the model from ``runtime.seed`` (the same initial weights everywhere);
    then every rank but 0 re-seeds with its rank (:func:`rank_seed`), so that the ranks draw
    different dropout masks. Rank 0 keeps the stream of a single process.
    """
    _seed_everything(cfg.runtime.seed)  # the same initial weights on every rank
    model = build_model(cfg)
    if ctx.rank:
        _seed_everything(rank_seed(cfg.runtime.seed, ctx.rank))
    if ctx.parallel and ctx.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(ctx.device)
    if cfg.runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model)
    amp_dtype = _amp_dtype(cfg, ctx.device, announce=ctx.is_main)
    return TrainState(model=model, optimizer=optimizer, scheduler=build_scheduler(cfg, optimizer),
                      scaler=torch.amp.GradScaler(ctx.device.type, enabled=amp_dtype == torch.float16),
                      amp_dtype=amp_dtype, loss_options=loss_options(cfg, ctx.device),
                      channels_last=cfg.runtime.channels_last, runner=model, model_config=ckpt.model_config(cfg))


def resume_from(state: TrainState, path: Path, ctx: distributed.DistributedContext) -> bool:
    """Load the checkpoint at ``path`` into ``state`` (weights, optimizer, scheduler, scaler,
    iteration) and restore this rank's RNG states; ``False`` if there is no checkpoint.

    The file is read onto the CPU whatever ``ctx.device`` is: the RNG states must be CPU tensors,
    and ``load_state_dict`` copies weights and optimizer buffers to where the model lives. A run
    saved without a gradient scaler (float32 or bfloat16) and resumed with float16 autocast
    starts a fresh scaler (:func:`_load_scaler`). The resumed run then repeats the one that
    never stopped exactly on the CPU; on CUDA only up to the nondeterminism of its kernels (see
    the module docstring).

    Raises:
        ocnet_edu.engine.checkpoint.CheckpointError: the file is corrupted, is not a training
            checkpoint (e.g. a ``final.pt``) or was trained with another ``model`` config.
    """
    if not path.exists():
        return False
    saved = ckpt.load(path, map_location="cpu")
    ckpt.require_training_checkpoint(saved, path)
    ckpt.check_model_config(saved, state.model_config, path)
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    _load_scaler(state.scaler, saved["scaler"], announce=ctx.is_main)
    ckpt.set_rng_state(saved["rng"][min(ctx.rank, len(saved["rng"]) - 1)])
    state.iteration = int(saved["iteration"])
    return True


def parallelize(state: TrainState, cfg: Config, ctx: distributed.DistributedContext) -> None:
    """Set ``state.runner``: DistributedDataParallel when a process group runs, then
    ``torch.compile`` if ``cfg.runtime.compile``; the bare ``state.model`` is kept for saving.

    ``torch.compile`` breaks its graph at every SyncBatchNorm layer (a collective in the
    middle of the network), so with SyncBatchNorm it warns (:func:`_warn_compile_sync_bn`).
    """
    runner = state.model
    if ctx.parallel:
        runner = nn.parallel.DistributedDataParallel(
            runner, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)
    if cfg.runtime.compile:
        _warn_compile_sync_bn(state.model)
        runner = torch.compile(runner)
    state.runner = runner


def train_step(state: TrainState, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
    """One SGD step on a batch (images ``[B, 3, H, W]``, labels ``[B, H, W]``, on the model's device).

    Forward under autocast, :meth:`~ocnet_edu.model.OCNet.loss`, (scaled) backward, optimizer
    and scheduler step. Returns this process's loss (a scalar on the device) and the learning
    rate the step used.

    Nothing is read back to the host: the loss is added to ``state.loss_sum`` and a non-finite
    loss recorded in ``state.first_nonfinite``, on the device; :func:`read_loss` (every
    ``runtime.log_every`` steps and before every checkpoint) agrees on them across processes
    and raises ``FloatingPointError`` on every process. (With float16 the gradient scaler still
    reads its inf check once per step.)
    """
    if state.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    device_type = images.device.type
    with torch.autocast(device_type, dtype=state.amp_dtype or torch.float32, enabled=state.amp_dtype is not None):
        loss = state.model.loss(state.runner(images), labels, **state.loss_options)
    _record_loss(state, loss)
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.step(state.optimizer)
    state.scaler.update()
    lr = state.optimizer.param_groups[0]["lr"]
    state.scheduler.step()
    state.iteration += 1
    return loss, lr


def _record_loss(state: TrainState, loss: torch.Tensor) -> None:
    """Add ``loss`` (a scalar) to ``state.loss_sum`` and note in ``state.first_nonfinite`` the
    iteration (1-based) of the first non-finite loss, all on the device."""
    loss = loss.detach().float()
    state.loss_sum = loss if state.loss_sum is None else state.loss_sum + loss
    state.loss_steps += 1
    if state.first_nonfinite is None:
        state.first_nonfinite = torch.zeros((), dtype=torch.int64, device=loss.device)
    bad = ~torch.isfinite(loss) & (state.first_nonfinite == 0)
    state.first_nonfinite = torch.where(bad, torch.full_like(state.first_nonfinite, state.iteration + 1),
                                        state.first_nonfinite)


def read_loss(state: TrainState, ctx: distributed.DistributedContext) -> float:
    """The mean loss of the steps since the last call, averaged over the processes; the one
    host sync of the loop.

    One all-reduce carries ``[mean loss, first non-finite iteration of rank 0, ..., of rank W-1]``,
    so every process learns whether any process saw a non-finite loss, and all of them raise
    together (no process is left waiting in the next collective).

    Raises:
        FloatingPointError: some process had a non-finite loss; names the processes and iterations.
    """
    if state.loss_sum is None:
        raise RuntimeError("read_loss needs at least one train_step since the last call")
    report = torch.zeros(1 + ctx.world_size, dtype=state.loss_sum.dtype, device=state.loss_sum.device)
    report[0] = state.loss_sum / state.loss_steps
    report[1 + ctx.rank] = state.first_nonfinite  # the assignment casts it to the report's dtype
    distributed.all_reduce_sum(report)
    report[0] /= ctx.world_size
    loss, *first_bad = report.tolist()
    state.loss_sum, state.loss_steps = None, 0
    bad = {rank: int(iteration) for rank, iteration in enumerate(first_bad) if iteration}
    if bad:
        where = ", ".join(f"process {rank} at iteration {iteration}" for rank, iteration in bad.items())
        raise FloatingPointError(
            f"the loss was not finite ({where}; {len(bad)} of {ctx.world_size} process(es)); every process "
            "stops. Try a lower optim.lr, or runtime.amp_dtype=bfloat16 / runtime.amp=false")
    return loss


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
    if cfg.runtime.deterministic:  # read by cuBLAS when it starts, so before anything runs on the GPU
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    ctx = distributed.setup(cfg.runtime.device, cfg.runtime.dist_timeout)
    try:
        with backend_flags(ctx.device, cfg.runtime.deterministic), distributed.explain_failures("training"):
            return _run(cfg, ctx, resume, progress, stop_after)
    finally:
        if ctx.is_main:
            run_dir.remove_stale_temporaries(out_dir)
        distributed.cleanup()


def _run(cfg: Config, ctx: distributed.DistributedContext, resume: bool, progress: bool,
         stop_after: int | None) -> dict[str, Any]:
    """Set up (or resume), then step until ``max_iters`` or ``stop_after``, checkpointing."""
    out_dir, max_iters = Path(cfg.runtime.out_dir), cfg.schedule.max_iters
    if cfg.runtime.log_every < 1:
        raise ValueError(f"runtime.log_every must be at least 1, got {cfg.runtime.log_every}")
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
        _, lr = train_step(state, images.to(ctx.device, non_blocking=True), labels.to(ctx.device, non_blocking=True))
        stopping = stop_after is not None and state.iteration >= stop_after
        saving = state.iteration % cfg.schedule.checkpoint_every == 0 or state.iteration == max_iters or stopping
        if saving or state.iteration % cfg.runtime.log_every == 0:  # never save a state that is not checked
            summary["final_loss"] = read_loss(state, ctx)
            log.step(state.iteration, summary["final_loss"], lr)
        if saving:
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
    """Yield this rank's ``(images, labels)`` for iterations ``start .. max_iters - 1``, epoch after
    epoch, from one ``DataLoader`` (:func:`~ocnet_edu.engine.loader.train_loader`)."""
    loader = train_loader(dataset, cfg.schedule.batch_size, ctx.world_size, ctx.rank, cfg.runtime.seed, start,
                          cfg.schedule.max_iters, cfg.runtime.workers, pin_memory=ctx.device.type == "cuda")
    yield from loader


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s generators once the model is built (rank 0 keeps ``seed``)."""
    return seed if rank == 0 else seed + 1_000_003 * rank


@contextmanager
def backend_flags(device: torch.device, deterministic: bool) -> Iterator[None]:
    """Training's backend settings, restored on exit (evaluation, with images of varying sizes,
    runs without them).

    On CUDA ``cudnn.benchmark`` is on (fixed-size crops: cuDNN times its algorithms once per
    shape and keeps the fastest), unless ``deterministic``. ``deterministic``
    (``runtime.deterministic``) sets ``torch.use_deterministic_algorithms(True, warn_only=True)``
    and ``cudnn.deterministic``: operations without a deterministic CUDA kernel (the backward of
    bilinear upsampling among them) warn instead of failing, so a CUDA run is repeatable only
    where no such warning appeared.
    """
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def _seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _amp_dtype(cfg: Config, device: torch.device, announce: bool = False) -> torch.dtype | None:
    """The autocast dtype of ``cfg.runtime`` (``None`` without AMP); float16 needs a GPU.

    ``runtime.amp_dtype=auto`` is bfloat16, except on a GPU without native bfloat16 (V100, T4:
    ``torch.cuda.is_bf16_supported(including_emulation=False)`` is false), where it is float16
    with a gradient scaler (said on the console if ``announce``).
    """
    if not cfg.runtime.amp:
        return None
    name = cfg.runtime.amp_dtype  # one of auto/bfloat16/float16: config.RULES, checked by train()
    if name == "auto":
        name = "bfloat16"
        if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
            name = "float16"
            if announce:
                print("runtime.amp_dtype=auto: this GPU has no native bfloat16; using float16 with a gradient scaler")
    if device.type == "cpu" and name == "float16":
        raise ValueError("float16 autocast needs a GPU; use runtime.amp_dtype=bfloat16 on the CPU")
    return getattr(torch, name)


def _load_scaler(scaler: torch.amp.GradScaler, saved: dict[str, Any], *, announce: bool) -> None:
    """Load a checkpoint's gradient-scaler state; an empty one (a run saved without float16)
    into an enabled scaler leaves it fresh (said on the console if ``announce``)."""
    if not saved and scaler.is_enabled():
        if announce:
            print("the checkpoint has no gradient-scaler state (it was saved without float16 autocast); "
                  "runtime.amp_dtype=float16 starts a fresh scaler")
        return
    scaler.load_state_dict(saved)


def _warn_compile_sync_bn(model: nn.Module) -> None:
    """Warn (once per call site) that ``runtime.compile`` breaks its graph at each SyncBatchNorm of ``model``."""
    count = sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    if count:
        warnings.warn(f"runtime.compile=true with SyncBatchNorm: torch.compile breaks its graph at each of the "
                      f"{count} SyncBatchNorm layers, which costs much of its gain; consider runtime.compile=false "
                      "when training on several GPUs", RuntimeWarning, stacklevel=2)


def _set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """``model.train()``, except that with ``freeze_bn`` the BatchNorm layers stay in eval mode."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
