"""Small models trained on the digit-cards benchmark, shipped inside the package.

The benchmark's config, ``digits.yaml``, and the trained weights, ``checkpoints/digits_<context>.pt``
(under 1 MB each), are package data of :mod:`ocnet_edu.zoo`, read with :mod:`importlib.resources`,
so they load from an installed wheel as from a checkout. ``digits.yaml`` is the one copy of the
benchmark's settings: ``configs/digits.yaml`` of the repository is a symbolic link to it, so that
``python -m ocnet_edu train --config configs/digits.yaml`` trains what the package ships.

``python scripts/train_digit_models.py`` (:mod:`ocnet_edu.experiments.digit_models`) trains the
config with three context modules and writes each checkpoint with the config overrides that
rebuild the model, the commit and the validation scores. The book loads them to study *trained*
relations (chapters 11–13) without training under ``pytest --nbval``.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["DIGIT_CONTEXTS", "DIGIT_CONTEXT_OPTIONS", "digit_model_path", "digit_overrides", "load_digit_model",
           "load_digits_config"]

DIGITS_CONFIG = files("ocnet_edu.zoo") / "digits.yaml"
"""The digit-cards benchmark's config (package data; ``configs/digits.yaml`` links to it)."""
CHECKPOINT_DIR = files("ocnet_edu.zoo") / "checkpoints"
"""Where the shipped digit models are (package data)."""

DIGIT_CONTEXT_OPTIONS = {
    "base_oc_isa": "{channels: 64, groups: [2, 2]}",
    "base_oc_sa": "{channels: 64}",
    "none": "{channels: 64}",
}
"""Context options of each shipped model, as in the ablation sweep (64 channels, ISA 2×2)."""

DIGIT_CONTEXTS = tuple(DIGIT_CONTEXT_OPTIONS)


def load_digits_config(overrides: list[str] | tuple[str, ...] = ()):
    """The digit-cards benchmark's :class:`~ocnet_edu.config.Config` (``digits.yaml``, package
    data) with ``key.sub=value`` ``overrides``."""
    from ocnet_edu.config import load_config

    with as_file(DIGITS_CONFIG) as path:
        return load_config(path, list(overrides))


def digit_overrides(context: str) -> list[str]:
    """Overrides of ``digits.yaml`` that give the model with ``context``."""
    if context not in DIGIT_CONTEXT_OPTIONS:
        raise ValueError(f"no digit model with context {context!r}; choose from {', '.join(DIGIT_CONTEXTS)}")
    return [f"model.context={context}", f"model.context_options={DIGIT_CONTEXT_OPTIONS[context]}"]


def digit_model_path(context: str) -> Path:
    """Where the model with ``context`` is kept: ``ocnet_edu/zoo/checkpoints/digits_<context>.pt``
    (a :class:`~pathlib.Path` when the package is installed as files, a checkout or a wheel)."""
    digit_overrides(context)  # validates the name
    return CHECKPOINT_DIR / f"digits_{context}.pt"  # type: ignore[return-value]  # a Path when installed as files


def load_digit_model(context: str, path: str | Path | None = None) -> tuple[nn.Module, Any, dict[str, Any]]:
    """``(model, cfg, info)``: the trained digit model in eval mode, its
    :class:`~ocnet_edu.config.Config`, and the checkpoint's other entries (``overrides``,
    ``commit``, ``val_miou``, ``val_pixel_acc``, ``train_seconds``, ``threads``).

    Args:
        context: one of :data:`DIGIT_CONTEXTS`.
        path: a checkpoint to load instead of the shipped one.

    Raises:
        ValueError: an unknown ``context``, or a file that holds another model.
        FileNotFoundError: the checkpoint is missing (the message gives the command that makes it).
    """
    from ocnet_edu.engine import checkpoint as ckpt
    from ocnet_edu.engine.builders import build_model

    resource = Path(path) if path is not None else digit_model_path(context)
    if not resource.is_file():
        raise FileNotFoundError(f"no digit model at {resource}; make it with "
                                f"`python scripts/train_digit_models.py --contexts {context}`")
    with as_file(resource) as file:
        state = ckpt.load(file)
    cfg = load_digits_config(state["overrides"])
    if cfg.model.context != context:
        raise ValueError(f"{resource} holds a {cfg.model.context!r} model, not {context!r}")
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    return model.eval(), cfg, {k: v for k, v in state.items() if k != "model"}
