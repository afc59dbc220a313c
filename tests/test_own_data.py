"""Your own data (ocnet_edu.data.custom, dataset ``folder``): layout, values, errors, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ocnet_edu.config import ConfigError, load_config, validate_config
from ocnet_edu.data import IGNORE_INDEX, DatasetError, ImageMaskFolder, dataset_from_config, read_classes
from ocnet_edu.data.make_folder import write_example_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_example_folder(tmp_path_factory.mktemp("own") / "data", splits={"train": 4, "val": 2},
                                size=(32, 40), ignore_index=200)


def _own(tmp_path, classes="a\nb\nc\n", mask=None, image_suffix=".png"):
    root = tmp_path / "own"
    (root / "images" / "train").mkdir(parents=True)
    (root / "masks" / "train").mkdir(parents=True)
    (root / "classes.txt").write_text(classes)
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(root / "images" / "train" / f"x{image_suffix}")
    mask = np.zeros((4, 5), np.uint8) if mask is None else mask
    Image.fromarray(mask).save(root / "masks" / "train" / "x.png")
    return root


def test_the_example_folder_reads_back_with_its_classes_and_ignore_value(folder):
    data = ImageMaskFolder(folder, "train", ignore_index=200)
    assert data.classes == ["background", "disk", "square", "bar"] and data.num_classes == 4
    assert len(data) == 4 and len(ImageMaskFolder(folder, "train+val", ignore_index=200)) == 6
    image, label = data[0]
    assert image.shape == (3, 32, 40) and label.shape == (32, 40) and label.dtype == torch.int64
    raw = np.asarray(Image.open(data.samples[0][1])).astype(np.int64)
    # class k stays k, the ignore value becomes the library's IGNORE_INDEX, nothing else changes
    expected = np.where(raw == 200, IGNORE_INDEX, raw)
    assert np.array_equal(label.numpy(), expected)
    assert (raw == 200).any() and (raw < 4).any()


def test_mask_values_that_are_not_a_class_or_the_ignore_value_name_the_file(tmp_path):
    mask = np.zeros((4, 5), np.uint8)
    mask[0, 0] = 3  # three classes: 0, 1, 2
    root = _own(tmp_path, mask=mask)
    data = ImageMaskFolder(root, "train")
    with pytest.raises(DatasetError, match=r"x\.png.*\[3\]"):
        data[0]


def test_ignore_index_may_not_be_a_class(tmp_path):
    with pytest.raises(ValueError, match="ignore_index must be in 3..255"):
        ImageMaskFolder(_own(tmp_path), "train", ignore_index=1)


@pytest.mark.parametrize("classes, message", [("only\n", "at least two"), ("a\nb\na\n", "repeated: \\['a'\\]")])
def test_a_bad_class_list_is_refused_naming_it(tmp_path, classes, message):
    root = _own(tmp_path, classes=classes)
    with pytest.raises(DatasetError, match=message):
        ImageMaskFolder(root, "train")
    with pytest.raises(DatasetError, match="classes.txt"):
        read_classes(root / "classes.txt")


def test_missing_pieces_are_named(tmp_path):
    root = _own(tmp_path)
    with pytest.raises(FileNotFoundError, match="images of split 'val'"):
        ImageMaskFolder(root, "val")
    (root / "masks" / "train" / "x.png").unlink()
    with pytest.raises(DatasetError, match="x.png does not exist"):
        ImageMaskFolder(root, "train")
    (root / "classes.txt").unlink()
    with pytest.raises(FileNotFoundError, match="class list not found"):
        ImageMaskFolder(root, "train")


def test_the_config_must_agree_with_classes_txt(folder):
    cfg = load_config("configs/own_data.yaml", [f"data.root={folder}", "data.ignore_index=200",
                                                "model.num_classes=5"])
    with pytest.raises(ConfigError, match=r"'model.num_classes' is 5 but .*classes.txt lists 4"):
        dataset_from_config(cfg, "train")
    with pytest.raises(ConfigError, match="data.ignore_index"):
        validate_config(load_config("configs/own_data.yaml", ["data.ignore_index=300"]))


def test_training_and_evaluation_run_on_the_folder(folder, tmp_path):
    from ocnet_edu.engine.evaluate import evaluate
    from ocnet_edu.engine.train import train

    cfg = load_config("configs/own_data.yaml", [
        f"data.root={folder}", "data.ignore_index=200", "model.num_classes=4", "model.backbone=small",
        "model.context_options={channels: 32, groups: [2, 2]}", "data.crop_size=[32,32]",
        "schedule.max_iters=2", "schedule.batch_size=2", "schedule.checkpoint_every=2",
        "runtime.device=cpu", "runtime.workers=0", f"runtime.out_dir={tmp_path / 'run'}"])
    train(cfg, progress=False)
    scores = evaluate(cfg, tmp_path / "run" / "final.pt", progress=False)
    assert len(scores["iou"]) == 4
    assert 0.0 <= scores["miou"] <= 1.0
