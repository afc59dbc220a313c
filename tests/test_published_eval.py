"""evaluate/predict --published: the sources' input normalisation and test pipelines, without downloads.

Tiny published-architecture models (random weights, narrow backbones, 4 classes) are saved under
the sources' key names and scored on a fake Cityscapes ``val`` split through the command line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ocnet_edu.__main__ import main
from ocnet_edu.engine.published import PIPELINES, parse_published, published_dataset
from ocnet_edu.zoo.published import PRESETS, build_published, load_published, source_keys

pytest.importorskip("cityscapesscripts")

SIZE = (27, 38)  # H, W: the feature maps (4x5 at stride 8) are not multiples of ISA's 8x8 groups
RAW_IDS = np.array([7, 8, 11, 0])  # road, sidewalk, building, unlabeled (ignored)


def make_cityscapes_val(root: Path, count: int = 2) -> Path:
    """A ``val`` split in the official layout: random images, labels of raw ids 7, 8, 11 and 0."""
    rng = np.random.default_rng(1)
    for i in range(count):
        stem = f"frankfurt_000000_00000{i}"
        image = root / "leftImg8bit" / "val" / "frankfurt" / f"{stem}_leftImg8bit.png"
        label = root / "gtFine" / "val" / "frankfurt" / f"{stem}_gtFine_labelIds.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        label.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(image)
        Image.fromarray(RAW_IDS[rng.integers(0, 4, SIZE)].astype(np.uint8), mode="L").save(label)
    return root


def save_tiny(path: Path, source: str, arch: str, seed: int = 0) -> Path:
    """A random 4-class model of ``source:arch`` with a narrow backbone, under the source's key names."""
    torch.manual_seed(seed)
    model = build_published(source, arch, 4, base_width=8)
    for module in model.modules():  # BN weights ≥ 1 survive InPlace-ABN's |γ| + ε up to ε
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(1.0, 2.0)
            module.running_mean.uniform_(-0.1, 0.1)
    torch.save({"state_dict": source_keys(model, source, arch)}, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    return {"data": make_cityscapes_val(root / "cityscapes"),
            "openseg:asp_ocnet": save_tiny(root / "asp.pth", "openseg", "asp_ocnet"),
            "mmseg:isanet_r50-d8": save_tiny(root / "mmseg.pth", "mmseg", "isanet_r50-d8"),
            "root": root}


@pytest.mark.parametrize("source", ["openseg", "mmseg"])
def test_dataset_images_are_normalised_as_the_source(files, source):
    """Pixel (0, 0) of the first image by hand: channel order, mean and std on the 0–255 scale."""
    data = published_dataset("cityscapes", files["data"], "val", PRESETS[source])
    image, _ = data[0]
    rgb = np.asarray(Image.open(data.samples[0][0])).astype(np.float64)[0, 0]
    if source == "openseg":  # BGR, mean of the 0–255 values, std 1
        expected = [rgb[2] - 102.9801, rgb[1] - 115.9465, rgb[0] - 122.7717]
    else:  # RGB, ImageNet mean and std on 0–255
        expected = [(rgb[0] - 123.675) / 58.395, (rgb[1] - 116.28) / 57.12, (rgb[2] - 103.53) / 57.375]
    assert image.shape == (3, *SIZE)
    np.testing.assert_allclose(image[:, 0, 0].numpy(), expected, rtol=0, atol=1e-4)


def _mmseg_ms_flip_by_hand(model, x: torch.Tensor) -> torch.Tensor:
    """mmseg's TTA written out: img_ratios 0.5…1.75, sizes int(n·r + 0.5), flip, logits resized
    back with align_corners=False, softmax, mean over the 12 predictions; the argmax ``[H, W]``."""
    h, w = x.shape[-2:]
    probs = []
    for r in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75):
        size = (int(h * r + 0.5), int(w * r + 0.5))
        scaled = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        for flip in (False, True):
            logits = model(scaled.flip(-1)).flip(-1) if flip else model(scaled)
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            probs.append(logits.softmax(1))
    return torch.stack(probs).mean(0).argmax(1)[0]


def _openseg_ms_flip_by_hand(model, x: torch.Tensor) -> torch.Tensor:
    """openseg's ms_test written out: scales 0.5…2.0, sizes int(n·s), align_corners=True, summed logits."""
    h, w = x.shape[-2:]
    total = 0
    for s in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0):
        for image in (x, x.flip(-1)):
            scaled = F.interpolate(image, size=(int(h * s), int(w * s)), mode="bilinear", align_corners=True)
            logits = F.interpolate(model(scaled), size=(h, w), mode="bilinear", align_corners=True)
            total = total + (logits.flip(-1) if image is not x else logits)
    return total.argmax(1)[0]


@pytest.mark.parametrize("published, by_hand", [("mmseg:isanet_r50-d8", _mmseg_ms_flip_by_hand),
                                                ("openseg:asp_ocnet", _openseg_ms_flip_by_hand)])
def test_predict_ms_flip_is_the_sources_pipeline(files, tmp_path, published, by_hand):
    out = tmp_path / "preds"
    assert main(["predict", "--published", published, str(files[published]), "--data", str(files["data"]),
                 "--tta", "ms-flip", "--num-classes", "4", "--train-ids", "--out", str(out), "--device", "cpu"]) == 0
    source, arch = parse_published(published)
    model = load_published(files[published], source, arch, 4)
    data = published_dataset("cityscapes", files["data"], "val", model.preprocess)
    for index, (image_path, _) in enumerate(data.samples):
        saved = np.asarray(Image.open(out / (Path(image_path).stem + ".png")))
        with torch.no_grad():
            expected = by_hand(model, data[index][0][None]).numpy()
        assert saved.shape == SIZE
        assert np.array_equal(saved, expected)


def test_evaluate_cli_scores_the_predictions(files, tmp_path, capsys):
    """evaluate --published (single scale) reports the mIoU of the labels predict writes."""
    args = ["--published", "openseg:asp_ocnet", str(files["openseg:asp_ocnet"]), "--data", str(files["data"]),
            "--num-classes", "4", "--device", "cpu"]
    assert main(["evaluate", *args, "--out", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["images"] == 2 and scores["pipeline"] == {"scales": [1.0], "flip": False, "merge": "logits",
                                                            "rounding": "floor", "align_corners": True}
    assert main(["predict", *args, "--train-ids", "--out", str(tmp_path / "preds")]) == 0
    confusion = np.zeros((4, 4), dtype=np.int64)
    data = published_dataset("cityscapes", files["data"], "val", PRESETS["openseg"])
    for index, (image_path, _) in enumerate(data.samples):
        pred = np.asarray(Image.open(tmp_path / "preds" / (Path(image_path).stem + ".png"))).astype(np.int64)
        label = data[index][1].numpy()
        keep = label != 255
        np.add.at(confusion, (label[keep], pred[keep]), 1)
    with np.errstate(invalid="ignore"):  # a class neither labelled nor predicted has no IoU
        iou = np.diag(confusion) / (confusion.sum(0) + confusion.sum(1) - np.diag(confusion))
    assert math.isclose(scores["miou"], float(np.nanmean(iou)), rel_tol=1e-9, abs_tol=1e-12)


def test_pipelines_are_the_sources():
    assert PIPELINES["openseg"]["ms-flip"].scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    assert PIPELINES["mmseg"]["ms-flip"].scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    assert PIPELINES["mmseg"]["ms-flip"].merge == "softmax" and not PIPELINES["mmseg"]["none"].align_corners
    assert all(p.align_corners for p in PIPELINES["openseg"].values())


@pytest.mark.parametrize("argv, status, message", [
    (["--published", "openseg-isanet", "x.pth"], 1, "--published takes SOURCE:ARCH, one of openseg:isanet"),
    (["--published", "openseg:ocrnet", "x.pth"], 1, "--published takes SOURCE:ARCH"),
    (["--published", "openseg:isanet", "missing.pth"], 1, "published checkpoint not found: 'missing.pth'"),
    (["--published", "openseg:isanet", "x.pth", "--flip"], 2, "drop --flip"),
    (["--config", "c.yaml", "--checkpoint", "c.pt", "--tta", "ms-flip"], 2, "--tta only apply with --published"),
])
def test_cli_errors_name_the_flag_or_file(files, capsys, argv, status, message):
    if "--config" not in argv:
        argv = [*argv, "--data", str(files["data"])]
    try:
        code = main(["evaluate", *argv])
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    assert code == status
    assert message in capsys.readouterr().err


def test_published_needs_data(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--published", "mmseg:isanet_r50-d8", "x.pth"])
    assert stop.value.code == 2 and "--published needs --data" in capsys.readouterr().err


def test_infer_relation_map_of_asp_ocnet_is_refused_in_one_line(files, tmp_path, capsys):
    """ASP-OC's OCP runs on a pooled map of its own branch: no relation row per image cell."""
    image = tmp_path / "street.png"
    Image.fromarray(np.zeros((*SIZE, 3), dtype=np.uint8)).save(image)
    assert main(["infer", str(image), "--published", "openseg:asp_ocnet", str(files["openseg:asp_ocnet"]),
                 "--num-classes", "4", "--out", str(tmp_path / "out"), "--relation-at", "1,1", "--device", "cpu"]) == 1
    assert "ReducedASPOC has none" in capsys.readouterr().err
    assert not (tmp_path / "out" / "street_labels.png").exists()  # refused before any work
