"""Training OCNet with the paper's recipe (Sec. 4.2), on one process or many.

``python -m ocnet_edu train --config configs/synthetic.yaml [--resume] [key.sub=value ...]``, or
``torchrun --nproc_per_node=8 -m ocnet_edu train --config ...`` for data-parallel training.

The recipe: SGD with momentum 0.9 and weight decay, the poly learning rate
``lr · (1 − iter/max_iter)^0.9``, loss = cross-entropy (ignore 255) on the final output
+ 0.4 × cross-entropy on the auxiliary output, optional OHEM, the augmentations of
:func:`ocnet_edu.data.transforms.paper_train_transforms`. Several processes run
DistributedDataParallel (NCCL on GPUs, gloo on the CPU); on GPUs BatchNorm becomes
``torch.nn.SyncBatchNorm``, the modern equivalent of the InPlace-ABN-sync the paper used.

A run directory holds ``config.yaml`` (the final config), ``metrics.csv`` (one row per iteration),
``checkpoint.pt`` (the latest, written atomically) and ``final.pt`` (the weights at the end).
Training is exactly resumable: the data order of every epoch is a function of (seed, epoch), the
augmentation of every sample a function of (seed, epoch, index), and the checkpoint carries
model, optimizer, scheduler, scaler, iteration and the RNG states, so a run stopped and resumed
ends with the same weights as one that never stopped.
"""

from __future__ import annotations

import csv
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ocnet_edu.engine import checkpoint as ckpt
from ocnet_edu.engine import distributed
from ocnet_edu.config import Config, save_config
from ocnet_edu.losses import poly_lr_factor, segmentation_loss

__all__ = ["build_model", "build_train_dataset", "epoch_batches", "train"]

CHECKPOINT = "checkpoint.pt"
FINAL = "final.pt"
METRICS = "metrics.csv"


def build_model(cfg: Config) -> nn.Module:
    """OCNet from ``cfg.model`` (backbone, context module and its options, classes)."""
    from ocnet_edu.backbones import build_backbone
    from ocnet_edu.heads import build_context_module
    from ocnet_edu.model import OCNet

    backbone = build_backbone(cfg.model.backbone, pretrained=cfg.model.pretrained, **cfg.model.backbone_options)
    context = build_context_module(cfg.model.context, in_channels=backbone.out_channels, **cfg.model.context_options)
    return OCNet(backbone, context, num_classes=cfg.model.num_classes, aux_weight=cfg.loss.aux_weight,
                 dropout=cfg.model.dropout)


def build_train_dataset(cfg: Config, split: str | None = None, train: bool = True) -> Dataset:
    """The dataset of ``cfg.data`` with the paper's training transforms (or evaluation ones)."""
    from ocnet_edu.data import build_dataset
    from ocnet_edu.data.transforms import eval_transforms, paper_train_transforms

    from ocnet_edu.data import DATASETS

    data = cfg.data
    flip_pairs = DATASETS[data.dataset].flip_pairs if data.dataset in DATASETS else ()
    transform = (
        paper_train_transforms(data.crop_size, data.scale_range, data.brightness, base_size=data.base_size,
                               hflip=data.hflip, flip_pairs=flip_pairs)
        if train
        else eval_transforms()
    )
    split = split or (data.split if train else data.val_split)
    if data.dataset == "synthetic":
        from ocnet_edu.data.synthetic import SyntheticShapes

        # validation: the same seed (hence the same class colours), scenes after the training ones
        length = data.synthetic_length if train else max(1, data.synthetic_length // 4)
        first = 0 if train else data.synthetic_length
        return SyntheticShapes(length=length, size=data.synthetic_size, num_classes=cfg.model.num_classes,
                               seed=cfg.runtime.seed, transform=transform, first_index=first)
    if data.dataset == "digits":
        from ocnet_edu.data.digits import DigitScenes

        return DigitScenes(split=split, length=data.synthetic_length, size=data.synthetic_size,
                           seed=cfg.runtime.seed, transform=transform, digit_scale=data.digit_scale)
    return build_dataset(data.dataset, data.root, split, transform=transform, seed=cfg.runtime.seed)


def epoch_batches(num_samples: int, batch_size: int, world_size: int, rank: int, seed: int, epoch: int) -> list[list[int]]:
    """This rank's batches of one epoch: a seeded permutation, cut into global batches of
    ``batch_size`` (the remainder is dropped), each split across ranks by striding.

    The union over ranks of the ``s``-th batches is the ``s``-th global batch of a single process
    with the same seed, which is what makes one and several processes comparable.
    """
    if batch_size % world_size:
        raise ValueError(f"the global batch size {batch_size} is not divisible by the {world_size} processes")
    steps = num_samples // batch_size
    if steps == 0:
        raise ValueError(f"the dataset has {num_samples} samples, fewer than one batch of {batch_size}")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_samples, generator=generator)[: steps * batch_size].tolist()
    return [order[s * batch_size + rank: (s + 1) * batch_size: world_size] for s in range(steps)]


def _batches(dataset: Dataset, cfg: Config, ctx: distributed.DistributedContext, start: int) -> Iterator:
    """Yield ``(iteration, images, labels)`` from ``start`` on, epoch after epoch."""
    steps_per_epoch = len(dataset) // cfg.schedule.batch_size
    epoch, step = divmod(start, steps_per_epoch) if steps_per_epoch else (0, 0)
    iteration = start
    while True:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        batches = epoch_batches(len(dataset), cfg.schedule.batch_size, ctx.world_size, ctx.rank, cfg.runtime.seed, epoch)
        loader = DataLoader(
            dataset,
            batch_sampler=batches[step:],
            num_workers=cfg.runtime.workers,
            pin_memory=ctx.device.type == "cuda",
            # an explicit generator: creating the loader must not draw from the global RNG,
            # or resuming would change the dropout masks that follow
            generator=torch.Generator().manual_seed(cfg.runtime.seed + epoch),
        )
        for images, labels in loader:
            yield iteration, images, labels
            iteration += 1
        epoch, step = epoch + 1, 0


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _amp_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
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


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DistributedDataParallel


def train(cfg: Config, resume: bool = False, progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Train ``cfg`` and return a summary (final loss, iterations, run directory).

    Args:
        cfg: the full configuration (see :mod:`ocnet_edu.config`).
        resume: continue from ``<out_dir>/checkpoint.pt`` if it exists.
        progress: show a tqdm progress bar (on rank 0 only).
        stop_after: stop (with a checkpoint) once this many iterations are done, as if the job
            were pre-empted; ``--resume`` continues it. ``None`` trains to ``max_iters``.
    """
    ctx = distributed.setup(cfg.runtime.device)
    out_dir = Path(cfg.runtime.out_dir)
    try:
        return _train(cfg, ctx, out_dir, resume, progress, stop_after)
    finally:
        distributed.cleanup()


def _train(cfg: Config, ctx: distributed.DistributedContext, out_dir: Path, resume: bool, progress: bool,
           stop_after: int | None) -> dict[str, Any]:
    from tqdm import tqdm  # plain bars: tqdm.auto warns in notebooks without ipywidgets

    _seed_everything(cfg.runtime.seed)  # the same initial weights on every rank
    model = build_model(cfg)
    if ctx.distributed and ctx.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(ctx.device)
    if cfg.runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay)
    max_iters = cfg.schedule.max_iters
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: poly_lr_factor(it, max_iters, cfg.optim.poly_power))
    amp_dtype = _amp_dtype(cfg, ctx.device)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=amp_dtype == torch.float16)
    class_weights = (torch.tensor(cfg.loss.class_weights, dtype=torch.float32, device=ctx.device)
                     if cfg.loss.class_weights is not None else None)

    start = 0
    checkpoint_path = out_dir / CHECKPOINT
    if resume and checkpoint_path.exists():
        state = ckpt.load(checkpoint_path, map_location=ctx.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"][min(ctx.rank, len(state["rng"]) - 1)])
        start = int(state["iteration"])
    elif resume and ctx.is_main:
        print(f"no checkpoint in {out_dir}; starting from scratch")

    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    train_model: nn.Module = model
    if ctx.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)
    if cfg.runtime.compile:
        train_model = torch.compile(train_model)

    dataset = build_train_dataset(cfg)
    writer = _MetricsWriter(out_dir / METRICS, start) if ctx.is_main else None
    bar = tqdm(total=max_iters, initial=start, disable=not (progress and ctx.is_main), desc="train", unit="it",
               dynamic_ncols=True)
    _set_train_mode(model, cfg.runtime.freeze_bn)
    last_loss = math.nan
    tick = time.perf_counter()
    batches = _batches(dataset, cfg, ctx, start) if start < max_iters else iter(())
    for iteration, images, labels in batches:
        if iteration >= max_iters:
            break
        images = images.to(ctx.device, non_blocking=True)
        labels = labels.to(ctx.device, non_blocking=True)
        if cfg.runtime.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(ctx.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            output = train_model(images)
            loss = segmentation_loss(output.logits.float(), labels,
                                     None if output.aux_logits is None else output.aux_logits.float(),
                                     aux_weight=cfg.loss.aux_weight, ohem=cfg.loss.ohem,
                                     ohem_thresh=cfg.loss.ohem_thresh, ohem_min_kept=cfg.loss.ohem_min_kept,
                                     class_weights=class_weights)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss.item()} at iteration {iteration}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        last_loss = distributed.all_reduce_mean(loss).item()
        now = time.perf_counter()
        images_per_s = cfg.schedule.batch_size / max(now - tick, 1e-9)
        tick = now
        if writer is not None:
            writer.write(iteration + 1, last_loss, lr, images_per_s)
        bar.set_postfix(loss=f"{last_loss:.3f}", lr=f"{lr:.2e}", img_s=f"{images_per_s:.1f}")
        bar.update(1)
        done = iteration + 1
        stopping = stop_after is not None and done >= stop_after
        if done % cfg.schedule.checkpoint_every == 0 or done == max_iters or stopping:
            _save(model, optimizer, scheduler, scaler, done, ctx, checkpoint_path)
        if stopping and done < max_iters:
            bar.close()
            return {"final_loss": last_loss, "iterations": done, "out_dir": str(out_dir),
                    "world_size": ctx.world_size, "stopped": True}
    bar.close()
    if ctx.is_main:
        ckpt.atomic_save({"model": _unwrap(model).state_dict(), "iteration": max_iters}, out_dir / FINAL)
    distributed.barrier()
    return {"final_loss": last_loss, "iterations": max_iters, "out_dir": str(out_dir), "world_size": ctx.world_size}


def _save(model, optimizer, scheduler, scaler, iteration, ctx, path: Path) -> None:
    """Write the checkpoint on rank 0, with every rank's RNG state (gathered)."""
    rng = [ckpt.rng_state()]
    if ctx.distributed:
        gathered: list[Any] = [None] * ctx.world_size
        torch.distributed.all_gather_object(gathered, rng[0])
        rng = gathered
    if ctx.is_main:
        ckpt.atomic_save({
            "model": _unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "iteration": iteration,
            "rng": rng,
        }, path)
    distributed.barrier()


class _MetricsWriter:
    """Append one CSV row per iteration; on resume, drop rows past the checkpoint first."""

    FIELDS = ("iteration", "loss", "lr", "images_per_s")

    def __init__(self, path: Path, start: int) -> None:
        rows = []
        if path.exists() and start > 0:
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= start]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        self.path = path
        self.tensorboard = None
        try:  # optional: TensorBoard if installed
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(path.parent / "tensorboard"))
        except ImportError:
            pass

    def write(self, iteration: int, loss: float, lr: float, images_per_s: float) -> None:
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([iteration, f"{loss:.6f}", f"{lr:.8g}", f"{images_per_s:.3f}"])
        if self.tensorboard is not None:
            self.tensorboard.add_scalar("train/loss", loss, iteration)
            self.tensorboard.add_scalar("train/lr", lr, iteration)
