"""What a training run reports per iteration: ``metrics.csv`` (and TensorBoard), a progress bar.

``metrics.csv`` has one row per iteration (per ``runtime.log_every`` iterations):
``iteration, loss, lr, images_per_s`` (the loss averaged over the processes and over the steps
since the previous row, the learning rate the last step used, the throughput of those steps). On
resume, the rows past the checkpoint's iteration are dropped first, so that a stopped and resumed
run has the same file as one that never stopped.

No row is lost to a crash: the file is only ever appended to, except when a resumed run drops
rows, which writes the new file beside the old one and swaps them atomically
(:func:`ocnet_edu.engine.run_dir.atomic_write`). A row half-written when the process died is
skipped when the file is read back.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

from ocnet_edu.engine.run_dir import atomic_write, write_error

__all__ = ["MetricsWriter", "TrainLog", "read_rows"]


class MetricsWriter:
    """Append one CSV row per iteration to ``path``; on resume from ``start``, drop later rows first.

    Also writes the loss and learning rate to TensorBoard (``<run>/tensorboard``) when it is installed.
    """

    FIELDS = ("iteration", "loss", "lr", "images_per_s")

    def __init__(self, path: Path, start: int) -> None:
        rows = read_rows(path, start) if start > 0 else []
        with atomic_write(path, what="metrics log") as f:  # a crash here leaves the old file whole
            writer = csv.DictWriter(f, fieldnames=self.FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        self.last_loss = float(rows[-1]["loss"]) if rows else math.nan
        self.path = path
        self.tensorboard = None
        try:  # optional: TensorBoard if installed
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(path.parent / "tensorboard"))
        except ImportError:
            pass

    def write(self, iteration: int, loss: float, lr: float, images_per_s: float) -> None:
        """Append the row of ``iteration`` (the number of steps done) and log it to TensorBoard."""
        try:
            with self.path.open("a", newline="") as f:
                csv.writer(f).writerow([iteration, f"{loss:.6f}", f"{lr:.8g}", f"{images_per_s:.3f}"])
        except OSError as error:
            raise write_error(self.path, error, "metrics log") from error
        if self.tensorboard is not None:
            self.tensorboard.add_scalar("train/loss", loss, iteration)
            self.tensorboard.add_scalar("train/lr", lr, iteration)


def _complete(row: dict[str, str | None]) -> bool:
    """Whether a CSV row has every field, each a number (a row cut by a crash has not)."""
    try:
        return all(float(row[name]) == float(row[name]) or name == "loss" for name in MetricsWriter.FIELDS)
    except (KeyError, TypeError, ValueError):  # a missing field is None (TypeError) or absent
        return False


def read_rows(path: Path, last: int) -> list[dict[str, str]]:
    """The complete rows of ``path`` up to iteration ``last`` (none if there is no file)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if _complete(r)]
    return [{k: r[k] for k in MetricsWriter.FIELDS} for r in rows if int(float(r["iteration"])) <= last]


class TrainLog:
    """The per-iteration report of a run: CSV rows (only where ``metrics_path`` is given, i.e. on
    rank 0), a tqdm bar from ``start`` to ``max_iters`` (if ``progress``) and the throughput in
    images per second of the global batch of ``batch_size``, over the steps since the last row."""

    def __init__(self, metrics_path: Path | None, start: int, max_iters: int, batch_size: int, progress: bool) -> None:
        from tqdm import tqdm  # plain bars: tqdm.auto warns in notebooks without ipywidgets

        self.writer = MetricsWriter(metrics_path, start) if metrics_path is not None else None
        self.last_loss = self.writer.last_loss if self.writer is not None else math.nan
        self.bar = tqdm(total=max_iters, initial=start, disable=not progress, desc="train", unit="it",
                        dynamic_ncols=True)
        self.batch_size = batch_size
        self.tick = time.perf_counter()
        self.last = start

    def step(self, iteration: int, loss: float, lr: float) -> None:
        """Report the steps that brought the run to ``iteration`` steps (one, or all since the
        last report), with their mean loss and the last learning rate."""
        now, steps = time.perf_counter(), iteration - self.last
        images_per_s = self.batch_size * steps / max(now - self.tick, 1e-9)
        self.tick, self.last = now, iteration
        if self.writer is not None:
            self.writer.write(iteration, loss, lr, images_per_s)
        self.last_loss = loss
        self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", img_s=f"{images_per_s:.1f}")
        self.bar.update(steps)

    def close(self) -> None:
        """Close the progress bar."""
        self.bar.close()
