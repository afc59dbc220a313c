"""Train the small digit-cards models that the book loads (chapters 11–13).

Command line (from the repository root; about 3 minutes on two CPU cores)::

    python scripts/train_digit_models.py            # Base-OC (ISA), Base-OC (SA), no context
    python scripts/train_digit_models.py --contexts base_oc_isa

Each model is the digits config (:func:`ocnet_edu.zoo.digits.load_digits_config`; seed 0, 1500
iterations) with one context module, trained with the library's own stack
(:func:`ocnet_edu.engine.train.train`). Only the weights are kept, with the overrides that rebuild
the model, the commit and the validation scores, in the package data of :mod:`ocnet_edu.zoo`,
``ocnet_edu/zoo/checkpoints/digits_<context>.pt`` (under 1 MB each, written atomically), so the
book can study a *trained* relation without training under ``pytest --nbval``. They are the
configurations of the seed-0 rows of Table 2 in ``benchmarks/results/ablations.csv``; their
scores can differ from those rows in the last digits because that sweep ran with one thread per
run and a different thread count changes the order of floating-point sums.

Load one with :func:`ocnet_edu.zoo.digits.load_digit_model`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ocnet_edu.experiments.ablations import git_commit
from ocnet_edu.zoo.digits import DIGIT_CONTEXTS, digit_model_path, digit_overrides, load_digits_config

__all__ = ["main", "train_one"]


def train_one(context: str, commit: str, path: Path | None = None) -> dict[str, Any]:
    """Train the digit model with ``context``, score it on the validation scenes and save it at
    ``path`` (default: :func:`~ocnet_edu.zoo.digits.digit_model_path`); returns what was saved
    besides the weights."""
    import torch

    from ocnet_edu.engine import checkpoint as ckpt
    from ocnet_edu.engine.evaluate import evaluate_model, load_model
    from ocnet_edu.engine.builders import build_eval_dataset
    from ocnet_edu.engine.train import FINAL, train

    overrides = digit_overrides(context)
    with tempfile.TemporaryDirectory(prefix="ocnet_digits_") as tmp:
        cfg = load_digits_config([*overrides, f"runtime.out_dir={tmp}"])
        start = time.perf_counter()
        train(cfg, progress=True)
        seconds = time.perf_counter() - start
        model = load_model(cfg, Path(tmp) / FINAL)
    scores = evaluate_model(model, build_eval_dataset(cfg), cfg.model.num_classes,
                            torch.device("cpu"), boundary_tolerances=(3,), progress=True)
    info = {"overrides": overrides, "commit": commit, "val_miou": float(scores["miou"]),
            "val_pixel_acc": float(scores["pixel_acc"]), "train_seconds": round(seconds, 1),
            "threads": torch.get_num_threads()}
    ckpt.atomic_save({"model": model.state_dict(), **info}, path or digit_model_path(context))
    return info


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory when it is inside it (as printed before the move)."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``--contexts``, train each model and print its scores and where it went."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contexts", nargs="+", default=list(DIGIT_CONTEXTS), choices=DIGIT_CONTEXTS)
    args = parser.parse_args(argv)
    commit = git_commit()  # once, before training: the state of the tree that made the models
    for context in args.contexts:
        info = train_one(context, commit)
        print(f"{context}: val mIoU {info['val_miou']:.4f}, pixel acc {info['val_pixel_acc']:.4f}, "
              f"{info['train_seconds']} s -> {_shown(digit_model_path(context))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
