"""The training data stream: one ``DataLoader`` for the whole run, epoch after epoch.

The order of the samples is a function of ``(seed, epoch)`` (:func:`epoch_batches`), and the
augmentation of every sample a function of ``(seed, epoch, index)`` (the datasets'
``set_epoch``). To build the ``DataLoader`` once (its worker processes then live for the whole
run, ``persistent_workers``) and still tell each worker which epoch a sample belongs to, the
batch sampler (:class:`EpochBatchSampler`) yields *keys* ``(epoch, index)`` and the dataset is
wrapped in :class:`EpochKeyed`, which switches the augmentation stream inside the worker that
loads the sample. The batches are exactly those of a loader rebuilt every epoch, so a stopped
and resumed run sees the same data as one that never stopped.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["EpochBatchSampler", "EpochKeyed", "epoch_batches", "train_loader"]


def epoch_batches(num_samples: int, batch_size: int, world_size: int, rank: int, seed: int, epoch: int) -> list[list[int]]:
    """This rank's batches of one epoch: a seeded permutation, cut into global batches of
    ``batch_size`` (the remainder is dropped), each split across ranks by striding.

    The union over ranks of the ``s``-th batches is the ``s``-th global batch of a single process
    with the same seed, which is what makes one and several processes comparable.

    Raises:
        ValueError: ``batch_size`` or ``world_size`` below 1, a batch not divisible by the
            processes, or fewer samples than one batch (never an empty list, which would make
            the training loop spin without end).
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


class EpochBatchSampler:
    """This rank's batches for iterations ``start .. stop - 1``, each a list of keys ``(epoch, index)``.

    Iteration ``t`` is step ``t mod S`` of epoch ``t // S`` (``S = num_samples // batch_size``
    steps per epoch), batch of :func:`epoch_batches`; so the stream from ``start`` is the tail of
    the stream from 0 (exact resume).
    """

    def __init__(self, num_samples: int, batch_size: int, world_size: int, rank: int, seed: int,
                 start: int, stop: int) -> None:
        epoch_batches(num_samples, batch_size, world_size, rank, seed, 0)  # the size checks, early
        self.args = (num_samples, batch_size, world_size, rank, seed)
        self.steps_per_epoch = num_samples // batch_size
        self.start, self.stop = start, max(start, stop)

    def __len__(self) -> int:
        """The number of batches, ``stop - start``."""
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        """Yield the batches of ``(epoch, index)`` keys, computing each epoch's order once."""
        epoch, step = divmod(self.start, self.steps_per_epoch)
        batches = epoch_batches(*self.args, epoch)
        for _ in range(len(self)):
            if step == self.steps_per_epoch:
                epoch, step = epoch + 1, 0
                batches = epoch_batches(*self.args, epoch)
            yield [(epoch, index) for index in batches[step]]
            step += 1


class EpochKeyed(Dataset):
    """``dataset`` indexed by ``(epoch, index)``: sets the epoch (``dataset.set_epoch``, the
    augmentation stream) in the process that loads the sample, then returns ``dataset[index]``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        """The length of the wrapped dataset."""
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        """Sample ``index`` of epoch ``epoch`` (``(image [3, H, W], label [H, W])`` for our datasets)."""
        epoch, index = key
        if hasattr(self.dataset, "set_epoch") and getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


def train_loader(dataset: Dataset, batch_size: int, world_size: int, rank: int, seed: int, start: int, stop: int,
                 workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """The one ``DataLoader`` of a run: this rank's batches of iterations ``start .. stop - 1``
    (:class:`EpochBatchSampler` over :class:`EpochKeyed`), ``persistent_workers`` when ``workers > 0``.

    It has an explicit generator: creating or iterating it must not draw from the global RNG, or
    resuming would change the dropout masks that follow.
    """
    sampler = EpochBatchSampler(len(dataset), batch_size, world_size, rank, seed, start, stop)
    return DataLoader(EpochKeyed(dataset), batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))
