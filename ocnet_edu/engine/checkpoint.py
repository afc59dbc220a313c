"""Atomic, checksummed, resumable checkpoints.

A checkpoint holds everything needed to continue a run bit for bit: model, optimizer, learning
rate scheduler, gradient scaler, the iteration, and the random number generator states (Python,
NumPy, torch CPU and CUDA), plus the ``model`` section of the config it was trained with
(:func:`model_config`). It is written to a temporary file in the same folder and moved into
place with :func:`os.replace` (:func:`ocnet_edu.engine.run_dir.atomic_write`), which is atomic on
POSIX: a run killed while saving leaves the previous checkpoint intact; a full disk is reported as
such, with the file's name.

Every file written by :func:`atomic_save` stores a SHA-256 checksum of its content
(:func:`content_checksum`: every tensor's bytes, dtype and shape and every other value, in a fixed
order); :func:`load` recomputes it and refuses a file whose bytes changed since (a
:class:`CheckpointError` naming it). Files without a checksum (written before it existed, e.g. the
shipped digit models) still load. Loading uses ``torch.load(weights_only=True)``: a checkpoint is
data, never code.
"""

from __future__ import annotations

import hashlib
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ocnet_edu.engine.run_dir import atomic_write

__all__ = ["CHECKSUM", "MODEL_CONFIG", "TRAINING_KEYS", "CheckpointError", "atomic_save", "check_model_config",
           "content_checksum", "load", "model_config", "require_training_checkpoint", "rng_state", "set_rng_state"]

CHECKSUM = "checksum"
"""The key of the stored content checksum (``"sha256:<hex>"``)."""
MODEL_CONFIG = "model_config"
"""The key of the stored ``model`` section of the config (:func:`model_config`)."""
TRAINING_KEYS = ("model", "optimizer", "scheduler", "scaler", "iteration", "rng")
"""What a training checkpoint (``checkpoint.pt``, not ``final.pt``) must hold to be resumed."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, corrupted, of another model, or of the wrong
    kind. The message names the file."""


def _hash_into(digest: "hashlib._Hash", value: Any, key: str) -> None:
    """Feed ``value`` (nested dicts, lists, tensors, scalars) into ``digest`` in a fixed order."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}:tensor:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())  # b"" for an empty tensor
    elif isinstance(value, dict):
        digest.update(f"{key}:dict:{len(value)};".encode())
        for name, item in sorted(value.items(), key=lambda kv: (type(kv[0]).__name__, repr(kv[0]))):
            _hash_into(digest, item, f"{key}/{name!r}")
    elif isinstance(value, (list, tuple)):
        digest.update(f"{key}:seq:{len(value)};".encode())
        for index, item in enumerate(value):
            _hash_into(digest, item, f"{key}/{index}")
    else:
        digest.update(f"{key}:{type(value).__name__}:{value!r};".encode())


def content_checksum(obj: dict[str, Any]) -> str:
    """``"sha256:<hex>"`` of everything in ``obj`` except a stored checksum: every tensor's
    dtype, shape and bytes and every other value, keys in sorted order (the same before saving
    and after loading, whatever the device)."""
    digest = hashlib.sha256()
    _hash_into(digest, {k: v for k, v in obj.items() if k != CHECKSUM}, "")
    return "sha256:" + digest.hexdigest()


def atomic_save(obj: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` ``obj`` and its :func:`content_checksum` to ``path``, atomically.

    Raises:
        ocnet_edu.engine.run_dir.WriteError: the file could not be written (e.g. "no space left on
            device"); the previous file at ``path`` is intact and no temporary file is left.
    """
    path = Path(path)
    stored = {**obj, CHECKSUM: content_checksum(obj)}
    with atomic_write(path, binary=True, what="checkpoint") as tmp:
        torch.save(stored, tmp)
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`atomic_save` (``weights_only=True``) and verify its
    checksum; the returned dict does not include the checksum.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file does not load (truncated, not a checkpoint) or its content no
            longer matches its checksum (bytes changed after it was written).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which
        raise CheckpointError(f"could not read the checkpoint {path}: {error}") from error
    if isinstance(obj, dict) and CHECKSUM in obj:
        stored = obj.pop(CHECKSUM)
        actual = content_checksum(obj)
        if actual != stored:
            raise CheckpointError(
                f"the checkpoint {path} is corrupted: its content checksum is {actual[:23]}..., but it was "
                f"saved with {str(stored)[:23]}...; the file changed after it was written (disk or copy "
                f"error). Use another copy, or an earlier checkpoint")
    return obj


def model_config(cfg: Any) -> dict[str, Any]:
    """The ``model`` section of ``cfg`` (a :class:`~ocnet_edu.config.Config`) as plain data, as
    stored in every checkpoint (backbone and its options, context module and its options,
    ``num_classes``, pretrained weights, dropout)."""
    from ocnet_edu.config import config_to_dict

    return config_to_dict(cfg)["model"]


def _differences(saved: Any, wanted: Any, key: str) -> list[str]:
    """``"key: checkpoint X, config Y"`` for every leaf where two nested dicts differ."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        return [line for name in sorted(set(saved) | set(wanted), key=str)
                for line in _differences(saved.get(name, "<absent>"), wanted.get(name, "<absent>"), f"{key}.{name}")]
    return [] if saved == wanted else [f"{key}: checkpoint {saved!r}, config {wanted!r}"]


IGNORED_MODEL_KEYS = ("pretrained",)
"""Model keys that may differ between a checkpoint and the config that loads it: the ImageNet
weights' path only matters before the first step."""


def check_model_config(saved: dict[str, Any], wanted: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint trained with another ``model`` section than ``wanted``
    (:func:`model_config` of the config that loads it).

    Old checkpoints without a stored model config only warn (nothing to compare).

    Raises:
        CheckpointError: naming ``path`` and every differing key with both values.
    """
    stored = saved.get(MODEL_CONFIG)
    if stored is None:
        warnings.warn(f"{path} stores no model config (written by an older version); cannot check that it "
                      f"matches the config's model section", stacklevel=2)
        return
    stored = {k: v for k, v in stored.items() if k not in IGNORED_MODEL_KEYS}
    wanted = {k: v for k, v in wanted.items() if k not in IGNORED_MODEL_KEYS}
    differences = _differences(stored, wanted, "model")
    if differences:
        raise CheckpointError(
            f"the checkpoint {path} was trained with another model than the config describes:\n  "
            + "\n  ".join(differences)
            + "\nuse the run's own config.yaml, or set these keys to the checkpoint's values")


def require_training_checkpoint(saved: dict[str, Any], path: str | Path) -> None:
    """Refuse to resume from a file that is not a training checkpoint (e.g. ``final.pt``).

    Raises:
        CheckpointError: naming ``path`` and the missing entries.
    """
    missing = [key for key in TRAINING_KEYS if key not in saved]
    if missing:
        raise CheckpointError(
            f"{path} is not a training checkpoint: it lacks {', '.join(missing)} (a final.pt holds only the "
            f"weights); --resume needs the checkpoint.pt that training writes every schedule.checkpoint_every "
            f"iterations")


def rng_state() -> dict[str, Any]:
    """The states of every random number generator a training step may touch.

    Python's and NumPy's states are stored as tensors/lists of ints so that the checkpoint loads
    with ``weights_only=True``.
    """
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states saved by :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy(), pos, has_gauss, cached))  # NumPy casts the keys to uint32 itself
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
