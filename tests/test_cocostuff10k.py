"""Issue 13: COCO-Stuff 10k in its official layout (``images``, ``annotations/*.mat``, ``imageLists``).

The fixture writes a tiny fake ``cocostuff-10k-v1.1`` tree: ``.mat`` files written with
``scipy.io.savemat`` hold ``S`` (class ids, 0 = unlabeled) and ``names``, as the official ones do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ocnet_edu.data import (
    COCOStuff10kDataset,
    DatasetError,
    IGNORE_INDEX,
    build_dataset,
    cocostuff_id_lut,
    cocostuff_lut,
)
from ocnet_edu.data.datasets import COCO_UNUSED_THING_IDS

scipy_io = pytest.importorskip("scipy.io")

H, W = 6, 8
TRAIN = ["COCO_train2014_000000000077", "COCO_train2014_000000000078", "COCO_train2014_000000000079"]
TEST = ["COCO_train2014_000000000080", "COCO_train2014_000000000081"]
NAMES = np.array(["unlabeled", "person", "bicycle"], dtype=object)


def label_map(seed: int) -> np.ndarray:
    """A ``[H, W]`` map of random COCO-Stuff class ids 0..182 (uint16, as the official files)."""
    return np.random.default_rng(seed).integers(0, 183, size=(H, W)).astype(np.uint16)


def make_cocostuff10k(root: Path) -> Path:
    """A fake 10k tree: 3 train and 2 test images, their ``.mat`` labels and the two lists."""
    for folder in ("images", "annotations", "imageLists"):
        (root / folder).mkdir(parents=True)
    for i, name in enumerate(TRAIN + TEST):
        rgb = np.random.default_rng(i).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / "images" / f"{name}.jpg")
        scipy_io.savemat(root / "annotations" / f"{name}.mat", {"S": label_map(i), "names": NAMES})
    (root / "imageLists" / "train.txt").write_text("\n".join(TRAIN) + "\n")
    (root / "imageLists" / "test.txt").write_text("\n".join(TEST) + "\n")
    return root


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return make_cocostuff10k(tmp_path / "cocostuff-10k-v1.1")


def test_split_sizes_come_from_the_lists(root: Path) -> None:
    assert len(COCOStuff10kDataset(root, "train")) == len(TRAIN)
    assert len(COCOStuff10kDataset(root, "test")) == len(TEST)
    assert len(COCOStuff10kDataset(root, "val")) == len(TEST)  # val is the test split
    assert len(COCOStuff10kDataset(root, "train+test")) == len(TRAIN) + len(TEST)
    first = COCOStuff10kDataset(root, "test").samples[0]
    assert first[0].name == f"{TEST[0]}.jpg" and first[1].name == f"{TEST[0]}.mat"


def test_labels_map_class_ids_to_the_171_train_ids(root: Path) -> None:
    dataset = COCOStuff10kDataset(root, "train")
    image, label = dataset[1]
    assert image.shape == (3, H, W) and label.shape == (H, W) and label.dtype == torch.int64
    ids = torch.from_numpy(label_map(1).astype(np.int64))
    # unlabeled (0) and the 11 never-annotated thing ids are ignored, the others count
    ignored = (ids == 0) | torch.isin(ids, torch.tensor(COCO_UNUSED_THING_IDS))
    assert torch.equal(label == IGNORE_INDEX, ignored)
    kept = label[~ignored]
    assert kept.min() >= 0 and kept.max() < 171
    # the train id of a used class id is the number of used ids below it
    used_below = torch.tensor([sum(1 for j in range(1, int(i)) if j not in COCO_UNUSED_THING_IDS) for i in ids[~ignored]])
    assert torch.equal(kept, used_below)


def test_one_mapping_for_both_layouts() -> None:
    """The 164k PNG value v is class id v + 1; both layouts give one class id one train id."""
    ids, png = cocostuff_id_lut(), cocostuff_lut()
    assert np.array_equal(png[:182], ids[1:183])
    assert ids[0] == png[255] == IGNORE_INDEX
    assert sorted(ids[(ids >= 0) & (ids < IGNORE_INDEX)].tolist()) == list(range(171))  # each train id once
    assert (ids[183:] == -1).all() and (png[182:255] == -1).all()


def test_registered_and_built_from_a_config(root: Path) -> None:
    from ocnet_edu.config import load_config
    from ocnet_edu.data import dataset_from_config

    assert isinstance(build_dataset("cocostuff10k", root, "train"), COCOStuff10kDataset)
    cfg = load_config(None, ["data.dataset=cocostuff10k", "model.num_classes=171", f"data.root={root}"])
    assert len(dataset_from_config(cfg, cfg.data.val_split, None)) == len(TEST)


def test_table11_configs_use_the_10k_layout() -> None:
    from ocnet_edu.config import load_config

    configs = sorted((Path(__file__).resolve().parents[1] / "configs" / "paper").glob("table11_*.yaml"))
    assert len(configs) == 4
    for path in configs:
        cfg = load_config(path)
        assert cfg.data.dataset == "cocostuff10k" and cfg.model.num_classes == 171, path


def test_missing_list_file_is_named(root: Path) -> None:
    (root / "imageLists" / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"imageLists/test\.txt"):
        COCOStuff10kDataset(root, "test")


def test_missing_mat_is_named(root: Path) -> None:
    missing = root / "annotations" / f"{TRAIN[2]}.mat"
    missing.unlink()
    with pytest.raises(DatasetError, match=str(missing)):
        COCOStuff10kDataset(root, "train")


def test_mat_without_s_is_named(root: Path) -> None:
    path = root / "annotations" / f"{TEST[0]}.mat"
    scipy_io.savemat(path, {"names": NAMES, "L": label_map(0)})
    dataset = COCOStuff10kDataset(root, "test")
    with pytest.raises(DatasetError, match=rf"{path}.*'S'"):
        dataset[0]


def test_broken_mat_and_bad_ids_are_named(root: Path) -> None:
    path = root / "annotations" / f"{TEST[1]}.mat"
    path.write_bytes(b"not a MATLAB file")
    with pytest.raises(DatasetError, match=str(path)):
        COCOStuff10kDataset(root, "test")[1]
    scipy_io.savemat(path, {"S": np.full((H, W), 200, dtype=np.uint16), "names": NAMES})
    with pytest.raises(DatasetError, match=rf"{path}.*\[200\]"):
        COCOStuff10kDataset(root, "test")[1]


def test_listed_image_missing_is_named(root: Path) -> None:
    (root / "images" / f"{TRAIN[0]}.jpg").unlink()
    with pytest.raises(DatasetError, match=TRAIN[0]):
        COCOStuff10kDataset(root, "train")
