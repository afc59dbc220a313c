"""The library's entry points (``evaluate``, ``predict``, ``evaluate_published``) hand their options
to the scoring and prediction loops unchanged, with the documented defaults, and write where asked.

The loops themselves are tested elsewhere (``test_published_eval.py``, ``test_predict.py``); here
they are replaced by recorders, so a wrong default or a dropped option shows up directly.
"""

from __future__ import annotations

import json

import pytest
import torch

from ocnet_edu.config import load_config
from ocnet_edu.engine import checkpoint as ckpt
from ocnet_edu.engine import evaluate as evaluate_module
from ocnet_edu.engine import predict as predict_module
from ocnet_edu.engine import published as published_module
from ocnet_edu.engine.builders import build_eval_dataset, build_model

SCORES = {"miou": 0.25, "iou": [0.5, 0.0]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A synthetic config and its (untrained) model, saved as a checkpoint with its model config."""
    cfg = load_config("configs/synthetic.yaml", ["data.synthetic_length=8", "model.context_options={channels: 16, groups: [2, 2]}"])
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "weights.pt"
    torch.save({"model": build_model(cfg).state_dict(), ckpt.MODEL_CONFIG: ckpt.model_config(cfg)}, path)
    return cfg, path


def _record(calls: list, result):
    def recorder(*args, **kwargs):
        calls.append((args, kwargs))
        return result

    return recorder


def test_evaluate_defaults_and_options_reach_the_scoring_loop(setup, monkeypatch, tmp_path):
    cfg, checkpoint = setup
    calls = []
    monkeypatch.setattr(evaluate_module, "evaluate_model", _record(calls, dict(SCORES)))
    assert evaluate_module.evaluate(cfg, checkpoint) == {**SCORES, "checkpoint": str(checkpoint)}
    (model, dataset, classes, device, scales, flip, window), options = calls[-1]
    assert (classes, device.type, scales, flip, window, options) == (5, "cpu", (1.0,), False, None, {"progress": True})
    assert len(dataset) == len(build_eval_dataset(cfg)) == 2  # the validation split (a quarter of 8 scenes)
    out = tmp_path / "new" / "folder" / "scores.json"
    for _ in range(2):  # the folder is made, and may exist already
        result = evaluate_module.evaluate(cfg, checkpoint, scales=(0.5, 1.0), flip=True, sliding=True, split="train",
                                          out=out, progress=False)
    (_, dataset, _, _, scales, flip, window), options = calls[-1]
    assert (scales, flip, window, options) == ((0.5, 1.0), True, cfg.data.crop_size, {"progress": False})
    assert len(dataset) == 8  # the training split
    assert out.read_text() == json.dumps(result, indent=2) and json.loads(out.read_text())["checkpoint"] == str(checkpoint)


def test_predict_defaults_and_options_reach_the_prediction_loop(setup, monkeypatch, tmp_path):
    cfg, checkpoint = setup
    calls = []
    monkeypatch.setattr(predict_module, "predict_to_folder", _record(calls, ["written"]))
    assert predict_module.predict(cfg, checkpoint, tmp_path / "out") == ["written"]
    (model, dataset, out_dir, classes, device, scales, flip, window, train_ids, progress), options = calls[-1]
    assert isinstance(model, torch.nn.Module) and not model.training  # the checkpoint's model, in eval mode
    assert (out_dir, classes, device.type, scales, flip, window, train_ids, progress, options) == (
        tmp_path / "out", 5, "cpu", (1.0,), False, None, False, True, {})
    assert len(dataset) == 2
    predict_module.predict(cfg, checkpoint, tmp_path / "out", split="train", scales=(0.75,), flip=True, sliding=True,
                           train_ids=True, progress=False)
    (_, dataset, _, _, _, scales, flip, window, train_ids, progress), _ = calls[-1]
    assert (len(dataset), scales, flip, window, train_ids, progress) == (8, (0.75,), True, cfg.data.crop_size, True, False)


def test_evaluate_published_defaults_and_output(monkeypatch, tmp_path):
    sessions, scored = [], []
    pipeline = published_module.PIPELINES["openseg"]["none"]
    data = list(range(5))

    def session(*args):
        sessions.append(args)
        return "model", data, pipeline, 19

    monkeypatch.setattr(published_module, "_session", session)
    monkeypatch.setattr(published_module, "evaluate_model", _record(scored, dict(SCORES)))
    result = published_module.evaluate_published("openseg:isanet", "c.pth", "root")
    assert sessions[-1] == ("openseg:isanet", "c.pth", "cityscapes", "root", "val", "none", None, "cpu")
    (model, dataset, classes, device, scales, flip), options = scored[-1]
    assert (model, dataset, classes, device, scales, flip) == ("model", data, 19, "cpu", (1.0,), False)
    assert options == {"progress": True, "tta_options": pipeline.options()}
    assert result["published"] == "openseg:isanet" and result["checkpoint"] == "c.pth"
    out = tmp_path / "a" / "b" / "scores.json"
    result = published_module.evaluate_published("openseg:isanet", "c.pth", "root", images=3, out=out, progress=False)
    assert list(scored[-1][0][1]) == [0, 1, 2] and scored[-1][1]["progress"] is False
    assert out.read_text() == json.dumps(result, indent=2)


def test_predict_published_defaults_reach_the_session_and_the_prediction_loop(monkeypatch, tmp_path):
    sessions, predicted = [], []
    pipeline = published_module.PIPELINES["mmseg"]["none"]

    def session(*args):
        sessions.append(args)
        return "model", "data", pipeline, 19

    monkeypatch.setattr(published_module, "_session", session)
    monkeypatch.setattr(published_module, "predict_to_folder", _record(predicted, ["p.png"]))
    assert published_module.predict_published("mmseg:ocrnet", "c.pth", "root", tmp_path) == ["p.png"]
    assert sessions[-1] == ("mmseg:ocrnet", "c.pth", "cityscapes", "root", "val", "none", None, "cpu")
    assert predicted[-1] == (("model", "data", tmp_path, 19, "cpu", (1.0,), False),
                             {"train_ids": False, "progress": True, "tta_options": pipeline.options()})
    published_module.predict_published("mmseg:ocrnet", "c.pth", "root", tmp_path, train_ids=True, progress=False)
    assert predicted[-1][1]["train_ids"] is True and predicted[-1][1]["progress"] is False


def test_a_published_session_takes_the_classes_of_the_dataset_unless_given(monkeypatch, tmp_path):
    loaded = []

    class Model(torch.nn.Module):
        preprocess = None

    def load(checkpoint, source, arch, classes):
        loaded.append((source, arch, classes))
        return Model()

    monkeypatch.setattr(published_module, "load_published", load)
    monkeypatch.setattr(published_module, "published_dataset", lambda *args: "data")
    checkpoint = tmp_path / "c.pth"
    checkpoint.write_bytes(b"")
    model, data, pipeline, classes = published_module._session("openseg:isanet", checkpoint, "cityscapes", tmp_path,
                                                              "val", "ms-flip", None, "cpu")
    assert (loaded[-1], classes, data, pipeline) == (("openseg", "isanet", 19), 19, "data",
                                                     published_module.PIPELINES["openseg"]["ms-flip"])
    assert published_module._session("openseg:isanet", checkpoint, "cityscapes", tmp_path, "val", "none", 7, "cpu")[3] == 7
    with pytest.raises(ValueError, match=r"^--tta must be one of \('none', 'ms-flip'\), got 'flip'$"):
        published_module._session("openseg:isanet", checkpoint, "cityscapes", tmp_path, "val", "flip", None, "cpu")


def test_a_bad_published_name_lists_every_choice():
    from ocnet_edu.zoo.published import ARCHS

    choices = ", ".join(f"{source}:{arch}" for source in ARCHS for arch in ARCHS[source])
    for text in ("openseg", "openseg:", "nosuch:isanet", "openseg:nosuch"):
        with pytest.raises(ValueError, match=f"^--published takes SOURCE:ARCH, one of {choices}; got '{text}'$"):
            published_module.parse_published(text)


def test_loading_a_checkpoint_of_another_model_names_the_file(setup):
    cfg, checkpoint = setup
    other = load_config("configs/synthetic.yaml", ["data.synthetic_length=8", "model.num_classes=6",
                                                    "model.context_options={channels: 16, groups: [2, 2]}"])
    with pytest.raises(ckpt.CheckpointError, match=rf"^the checkpoint {checkpoint} was trained with another model"):
        evaluate_module.load_model(other, checkpoint)
    model = evaluate_module.load_model(cfg, checkpoint)
    assert not model.training and next(model.parameters()).device.type == "cpu"
