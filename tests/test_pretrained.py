"""ocnet_edu.zoo.digits: the shipped digit-card models load, predict, and fail clearly."""

from __future__ import annotations

import shutil

import pytest
import torch

from ocnet_edu.engine import checkpoint as ckpt
from ocnet_edu.zoo.digits import DIGIT_CONTEXTS, digit_model_path, digit_overrides, load_digit_model

pytest.importorskip("sklearn", reason="the digit models' config uses DigitScenes")


@pytest.mark.parametrize("context", DIGIT_CONTEXTS)
def test_shipped_models_load_and_predict(context):
    path = digit_model_path(context)
    assert path.is_file() and path.stat().st_size < 1_500_000  # small enough to live in git
    model, cfg, info = load_digit_model(context)
    assert not model.training and cfg.model.context == context
    assert set(info) >= {"overrides", "commit", "val_miou", "val_pixel_acc", "train_seconds"}
    assert info["overrides"] == digit_overrides(context)
    assert 0.3 < info["val_miou"] < 1.0
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 96, 96))
    assert logits.shape == (2, cfg.model.num_classes, 96, 96) and torch.isfinite(logits).all()


def test_recorded_score_matches_a_fresh_evaluation_of_the_weights():
    """The validation mIoU stored with the ISA model is what its weights score (first 64 scenes
    give a number within a few points of the full 1024)."""
    from torch.utils.data import Subset

    from ocnet_edu.engine.evaluate import evaluate_model
    from ocnet_edu.engine.builders import build_eval_dataset

    model, cfg, info = load_digit_model("base_oc_isa")
    scores = evaluate_model(model, Subset(build_eval_dataset(cfg), range(64)), cfg.model.num_classes,
                            boundary_tolerances=(3,))
    assert abs(scores["miou"] - info["val_miou"]) < 0.08


def test_bad_names_and_files(tmp_path):
    with pytest.raises(ValueError, match="choose from"):
        digit_overrides("danet")
    with pytest.raises(ValueError, match="choose from"):
        digit_model_path("base_oc")
    with pytest.raises(FileNotFoundError, match="train_digit_models.py --contexts none"):
        load_digit_model("none", tmp_path / "missing.pt")
    # a file that holds another model is refused, not loaded into the wrong architecture
    other = tmp_path / "isa.pt"
    shutil.copy(digit_model_path("base_oc_isa"), other)
    with pytest.raises(ValueError, match="holds a 'base_oc_isa' model"):
        load_digit_model("base_oc_sa", other)
    # a truncated file names itself
    broken = tmp_path / "broken.pt"
    broken.write_bytes(digit_model_path("none").read_bytes()[:1000])
    with pytest.raises(ValueError, match="broken.pt"):
        load_digit_model("none", broken)
    assert ckpt.load(digit_model_path("none"))["overrides"][0] == "model.context=none"
