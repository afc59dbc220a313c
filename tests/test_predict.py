"""``python -m ocnet_edu predict``: label PNGs in the dataset's raw ids, one per image."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ocnet_edu.config import load_config
from ocnet_edu.data import CityscapesDataset, SyntheticShapes, cityscapes_lut
from ocnet_edu.data.transforms import eval_transforms
from ocnet_edu.engine.evaluate import multi_scale_logits
from ocnet_edu.engine.predict import output_names, predict_to_folder, train_to_raw_ids
from ocnet_edu.engine.builders import build_model
from ocnet_edu.engine.train import train

ROOT = Path(__file__).resolve().parents[1]


def make_cityscapes_test(root: Path, count: int = 2) -> Path:
    """A fake ``test`` split with the official package's placeholder (all-zero) label maps."""
    rng = np.random.default_rng(0)
    for i in range(count):
        stem = f"berlin_000000_00001{i}"
        image = root / "leftImg8bit" / "test" / "berlin" / f"{stem}_leftImg8bit.png"
        label = root / "gtFine" / "test" / "berlin" / f"{stem}_gtFine_labelIds.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        label.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(image)
        Image.fromarray(np.zeros((20, 24), dtype=np.uint8), mode="L").save(label)
    return root


def test_train_ids_map_back_to_cityscapes_label_ids():
    pytest.importorskip("cityscapesscripts")
    table = train_to_raw_ids(type("D", (), {"lut": cityscapes_lut()})(), 19)
    assert table[:3].tolist() == [7, 8, 11]           # road, sidewalk, building
    assert table[-1] == 33                            # bicycle
    assert np.array_equal(cityscapes_lut()[table], np.arange(19))
    with pytest.raises(ValueError, match="no raw label id for train id 19"):
        train_to_raw_ids(type("D", (), {"lut": cityscapes_lut()})(), 20)


def test_predictions_on_a_cityscapes_test_split(tmp_path):
    pytest.importorskip("cityscapesscripts")
    root = make_cityscapes_test(tmp_path / "cityscapes")
    dataset = CityscapesDataset(root, "test", transform=eval_transforms())
    cfg = load_config(ROOT / "configs" / "synthetic.yaml", ["model.num_classes=19"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    written = predict_to_folder(model, dataset, tmp_path / "out", 19, scales=(1.0, 0.75), flip=True)
    assert [p.name for p in written] == ["berlin_000000_000010_leftImg8bit.png", "berlin_000000_000011_leftImg8bit.png"]
    for index, path in enumerate(written):
        saved = np.array(Image.open(path))
        assert saved.shape == (20, 24) and saved.dtype == np.uint8
        with torch.no_grad():
            expected = multi_scale_logits(model, dataset[index][0][None], 19, (1.0, 0.75), True).argmax(1)[0]
        # label ids on disk, the model's train ids after the dataset's own mapping
        assert np.array_equal(cityscapes_lut()[saved], expected.numpy())
    train_ids = predict_to_folder(model, dataset, tmp_path / "ids", 19, train_ids=True)
    assert np.array_equal(cityscapes_lut()[np.array(Image.open(written[0]))], np.array(Image.open(train_ids[0])))


def test_generated_scenes_are_numbered_and_duplicate_stems_refused():
    assert output_names(SyntheticShapes(length=3, size=(8, 8)))[:2] == ["000000.png", "000001.png"]
    clash = type("D", (), {"samples": [("a/x.png", "l1"), ("b/x.png", "l2")], "__len__": lambda self: 2})()
    with pytest.raises(ValueError, match="x.png"):
        output_names(clash)


@pytest.mark.slow
def test_predict_cli(tmp_path):
    train(load_config(ROOT / "configs" / "synthetic.yaml", [f"runtime.out_dir={tmp_path}", "schedule.max_iters=4"]),
          progress=False)
    out = tmp_path / "predictions"
    command = [sys.executable, "-m", "ocnet_edu", "predict", "--config", str(tmp_path / "config.yaml"),
               "--checkpoint", str(tmp_path / "final.pt"), "--out", str(out), "--flip"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = load_config(tmp_path / "config.yaml")
    files = sorted(out.glob("*.png"))
    assert len(files) == cfg.data.synthetic_length // 4 and f"wrote {len(files)} prediction(s)" in done.stdout
    values = np.unique(np.concatenate([np.array(Image.open(f)).ravel() for f in files]))
    assert values.max() < cfg.model.num_classes
