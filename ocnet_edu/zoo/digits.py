"""Small models trained on the digit-cards benchmark, shipped with the repository.

``scripts/train_digit_models.py`` trains ``configs/digits.yaml`` with three context modules and
keeps the weights in ``benchmarks/results/checkpoints/digits_<context>.pt`` (under 1 MB each), with
the config overrides that rebuild the model, the commit and the validation scores. The book loads
them to study *trained* relations (chapters 11–13) without training under ``pytest --nbval``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["DIGIT_CONTEXTS", "DIGIT_CONTEXT_OPTIONS", "digit_model_path", "digit_overrides", "load_digit_model"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DIGITS_CONFIG = REPO_ROOT / "configs" / "digits.yaml"
CHECKPOINT_DIR = REPO_ROOT / "benchmarks" / "results" / "checkpoints"

DIGIT_CONTEXT_OPTIONS = {
    "base_oc_isa": "{channels: 64, groups: [2, 2]}",
    "base_oc_sa": "{channels: 64}",
    "none": "{channels: 64}",
}
"""Context options of each shipped model, as in ``scripts/ablations.py`` (64 channels, ISA 2×2)."""

DIGIT_CONTEXTS = tuple(DIGIT_CONTEXT_OPTIONS)


def digit_overrides(context: str) -> list[str]:
    """Overrides of ``configs/digits.yaml`` that give the model with ``context``."""
    if context not in DIGIT_CONTEXT_OPTIONS:
        raise ValueError(f"no digit model with context {context!r}; choose from {', '.join(DIGIT_CONTEXTS)}")
    return [f"model.context={context}", f"model.context_options={DIGIT_CONTEXT_OPTIONS[context]}"]


def digit_model_path(context: str) -> Path:
    """Where the model with ``context`` is kept."""
    digit_overrides(context)  # validates the name
    return CHECKPOINT_DIR / f"digits_{context}.pt"


def load_digit_model(context: str, path: str | Path | None = None) -> tuple[nn.Module, Any, dict[str, Any]]:
    """``(model, cfg, info)``: the trained digit model in eval mode, its
    :class:`~ocnet_edu.config.Config`, and the checkpoint's other entries (``overrides``,
    ``commit``, ``val_miou``, ``val_pixel_acc``, ``train_seconds``, ``threads``).

    Raises:
        ValueError: an unknown ``context``.
        FileNotFoundError: the checkpoint is missing (the message gives the command that makes it).
    """
    from ocnet_edu.engine import checkpoint as ckpt
    from ocnet_edu.config import load_config
    from ocnet_edu.engine.train import build_model

    path = Path(path) if path is not None else digit_model_path(context)
    if not path.is_file():
        raise FileNotFoundError(f"no digit model at {path}; make it with "
                                f"`python scripts/train_digit_models.py --contexts {context}`")
    state = ckpt.load(path)
    cfg = load_config(DIGITS_CONFIG, state["overrides"])
    if cfg.model.context != context:
        raise ValueError(f"{path} holds a {cfg.model.context!r} model, not {context!r}")
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    return model.eval(), cfg, {k: v for k, v in state.items() if k != "model"}
