"""The files of a run directory: atomic writes, stale temporaries, no silent overwrite of a run.

* :func:`atomic_write` writes a file through a temporary file in the same folder (``.<name>.<random>.tmp``),
  ``fsync`` and :func:`os.replace`: a process killed while writing leaves the previous version
  of the file whole. Writing errors become a :class:`WriteError` naming the file, and "no space
  left on device" when that is the cause (also for PyTorch's ``unexpected pos`` message).
* :func:`remove_stale_temporaries` deletes the temporaries a killed writer could not delete
  (``SIGKILL`` runs no ``finally``); training calls it when it starts and when it ends.
* :func:`check_run_directory` refuses to start a run in a folder that already holds one,
  unless it is resumed (``--resume``) or explicitly overwritten (``--overwrite``), and
  :func:`clear_run_directory` removes a previous run's files for ``--overwrite``.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["RUN_FILES", "RunDirectoryError", "WriteError", "atomic_write", "check_run_directory",
           "clear_run_directory", "remove_stale_temporaries", "write_error"]

RUN_FILES = ("config.yaml", "metrics.csv", "checkpoint.pt", "final.pt", "tensorboard")
"""What a training run writes into its directory (``tensorboard`` is a folder)."""

_TMP_SUFFIX = ".tmp"


class RunDirectoryError(FileExistsError):
    """Training was asked to start from scratch in a folder that already holds a run."""


class WriteError(OSError):
    """A file of a run could not be written; the message names it (and a full disk as such)."""


def _disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the disk is full (``ENOSPC``, or PyTorch's zip writer's messages)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error).lower()
    return any(s in text for s in ("no space left", "unexpected pos", "file write failed", "disk quota"))


def write_error(path: Path, error: BaseException, what: str = "file") -> WriteError:
    """The :class:`WriteError` of ``error`` raised while writing ``path`` (a ``what``)."""
    if _disk_full(error):
        return WriteError(f"could not write the {what} {path}: no space left on device "
                          f"(free some space in {path.parent}, or set runtime.out_dir elsewhere); "
                          f"the previous version of the file, if any, is intact ({type(error).__name__}: {error})")
    return WriteError(f"could not write the {what} {path} ({type(error).__name__}: {error})")


@contextmanager
def atomic_write(path: str | Path, binary: bool = False, what: str = "file") -> Iterator[IO]:
    """Yield a file object whose content replaces ``path`` atomically when the block ends.

    The temporary file is deleted if the block (or the write) fails; errors while writing are
    re-raised as :class:`WriteError` naming ``path`` (a ``what``, for the message).
    """
    path = Path(path)
    try:  # a folder that cannot be made (a file in the way, no permission) is named like a failed write
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    except OSError as error:
        raise write_error(path, error, what) from error
    try:
        try:
            with os.fdopen(handle, "wb" if binary else "w", **({} if binary else {"newline": ""})) as tmp:
                yield tmp
                tmp.flush()
                os.fsync(tmp.fileno())
        except (OSError, RuntimeError) as error:
            raise write_error(path, error, what) from error
        os.replace(tmp_name, path)
        _fsync_folder(path.parent)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Flush ``folder``'s entries to disk (so the rename survives a power cut); best effort."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the ``.<name>.<random>.tmp`` files that :func:`atomic_write` left in ``folder`` when
    its process was killed; return them. Only run this where no other process is writing."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(f".*{_TMP_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def check_run_directory(folder: str | Path, resume: bool, overwrite: bool) -> None:
    """Refuse to train from scratch into ``folder`` if it holds anything.

    Raises:
        RunDirectoryError: ``folder`` is not empty and neither ``resume`` nor ``overwrite`` is set;
            the message names the folder, what is in it and the ways out.
    """
    folder = Path(folder)
    if resume or overwrite or not folder.exists():
        return
    if not folder.is_dir():
        raise RunDirectoryError(f"runtime.out_dir {folder} is a file, not a folder")
    entries = sorted(p.name for p in folder.iterdir())
    if entries:
        shown = ", ".join(entries[:6]) + (", ..." if len(entries) > 6 else "")
        raise RunDirectoryError(
            f"runtime.out_dir {folder} is not empty ({shown}); training from scratch would overwrite its "
            f"metrics and checkpoints. Use --resume to continue that run, --overwrite to replace it "
            f"(train(..., overwrite=True)), or another runtime.out_dir")


def clear_run_directory(folder: str | Path) -> None:
    """Delete a previous run's files (:data:`RUN_FILES`) and stale temporaries from ``folder``;
    other files are left alone."""
    folder = Path(folder)
    for name in RUN_FILES:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    remove_stale_temporaries(folder)
