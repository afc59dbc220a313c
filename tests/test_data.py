"""Datasets: tiny fake copies of each official layout, written with PIL into tmp_path."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from einops import rearrange
from PIL import Image
from torch.utils.data import DataLoader

from ocnet_edu.data import (
    ADE20KDataset,
    COCOStuffDataset,
    CityscapesDataset,
    DatasetError,
    LIPDataset,
    PascalContextDataset,
    SyntheticShapes,
    build_dataset,
    cocostuff_lut,
)
from ocnet_edu.data.transforms import paper_train_transforms

H, W = 12, 16


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(path)


def write_label(path: Path, values: list[int], size: tuple[int, int] = (H, W)) -> None:
    """A label PNG (mode L) whose columns cycle through ``values``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    row = np.resize(np.array(values, dtype=np.uint8), size[1])
    Image.fromarray(np.tile(row, (size[0], 1)), mode="L").save(path)


def expected(values: list[int]) -> torch.Tensor:
    return torch.from_numpy(np.tile(np.resize(np.array(values, dtype=np.int64), W), (H, 1)))


# Each builder writes one dataset layout and returns (root, dataset kwargs, raw, mapped).
def make_cityscapes(root: Path, raw: list[int] | None = None) -> Path:
    raw = raw if raw is not None else CITYSCAPES_RAW
    for split, cities in (("train", ("aachen", "bremen")), ("val", ("frankfurt",))):
        for i, city in enumerate(cities):
            stem = f"{city}_000000_00001{i}"
            write_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", seed=i)
            write_label(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", raw)
    return root


def make_ade20k(root: Path, raw: list[int] | None = None) -> Path:
    base = root / "ADEChallengeData2016"
    for split in ("training", "validation"):
        for i in range(2):
            write_image(base / "images" / split / f"ADE_{split[:5]}_{i:08d}.jpg", seed=i)
            write_label(base / "annotations" / split / f"ADE_{split[:5]}_{i:08d}.png", raw or ADE_RAW)
    return root


def make_lip(root: Path, raw: list[int] | None = None) -> Path:
    for split in ("train", "val"):
        for i in range(2):
            write_image(root / "TrainVal_images" / f"{split}_images" / f"{i}_{split}.jpg", seed=i)
            write_label(root / "TrainVal_parsing_annotations" / f"{split}_segmentations" / f"{i}_{split}.png", raw or LIP_RAW)
    return root


def make_pascal_context(root: Path, raw: list[int] | None = None) -> Path:
    base = root / "VOCdevkit" / "VOC2010"
    lists = base / "ImageSets" / "SegmentationContext"
    lists.mkdir(parents=True)
    for split, ids in (("train", ["2008_000002", "2008_000003"]), ("val", ["2008_000007"])):
        (lists / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for i, image_id in enumerate(ids):
            write_image(base / "JPEGImages" / f"{image_id}.jpg", seed=i)
            write_label(base / "SegmentationClassContext" / f"{image_id}.png", raw or PASCAL_RAW)
    return root


def make_coco_stuff(root: Path, raw: list[int] | None = None) -> Path:
    for split in ("train2017", "val2017"):
        for i in range(2):
            write_image(root / "images" / split / f"{i:012d}.jpg", seed=i)
            write_label(root / "annotations" / split / f"{i:012d}.png", raw or COCO_RAW)
    return root


# raw label values written to the fake files, and the train ids they must become
CITYSCAPES_RAW, CITYSCAPES_IDS = [0, 7, 8, 26, 33, 255, 4], [255, 0, 1, 13, 18, 255, 255]
ADE_RAW, ADE_IDS = [0, 1, 2, 150], [255, 0, 1, 149]
LIP_RAW, LIP_IDS = [0, 5, 19, 255], [0, 5, 19, 255]
PASCAL_RAW, PASCAL_IDS = [0, 1, 59, 255], [0, 1, 59, 255]
# PNG value = COCO id - 1: id 1 -> 0, id 12 (unused) -> 255, id 13 -> 11, id 92 (first stuff) -> 80, id 182 -> 170
COCO_RAW, COCO_IDS = [0, 11, 12, 91, 181, 255], [0, 255, 11, 80, 170, 255]

CASES = {
    "cityscapes": (CityscapesDataset, make_cityscapes, "train", 2, CITYSCAPES_IDS, 19),
    "ade20k": (ADE20KDataset, make_ade20k, "train", 2, ADE_IDS, 150),
    "lip": (LIPDataset, make_lip, "val", 2, LIP_IDS, 20),
    "pascal_context": (PascalContextDataset, make_pascal_context, "train", 2, PASCAL_IDS, 60),
    "coco_stuff": (COCOStuffDataset, make_coco_stuff, "val", 2, COCO_IDS, 171),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_dataset_loads_official_layout(tmp_path: Path, name: str) -> None:
    cls, make, split, length, ids, num_classes = CASES[name]
    root = make(tmp_path / name)
    ds = cls(root, split)
    assert len(ds) == length and ds.num_classes == num_classes
    image, label = ds[0]
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    assert 0 <= float(image.min()) and float(image.max()) <= 255
    assert label.dtype == torch.int64
    assert torch.equal(label, expected(ids))
    assert isinstance(build_dataset(name, root, split), cls)


def test_cityscapes_image_is_read_exactly_and_splits_join(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path)
    ds = CityscapesDataset(root, "train+val")
    assert len(ds) == 3
    first = sorted((root / "leftImg8bit" / "train").glob("*/*.png"))[0]
    assert torch.equal(ds[0][0], rearrange(torch.from_numpy(np.array(Image.open(first))), "h w c -> c h w").float())


def test_pascal_context_59_class_setting(tmp_path: Path) -> None:
    ds = PascalContextDataset(make_pascal_context(tmp_path), "val", include_background=False)
    assert ds.num_classes == 59
    assert torch.equal(ds[0][1], expected([255, 0, 58, 255]))


def test_cocostuff_mapping_is_171_sorted_used_ids() -> None:
    lut = cocostuff_lut()
    train_ids = lut[:182][lut[:182] != 255]
    assert train_ids.tolist() == list(range(171))
    assert int((lut[:182] == 255).sum()) == 11
    assert (lut[182:255] == -1).all() and lut[255] == 255


def test_transform_is_deterministic_per_sample_and_epoch(tmp_path: Path) -> None:
    root = make_ade20k(tmp_path)
    ds = ADE20KDataset(root, "train", transform=paper_train_transforms((8, 8)), seed=3)
    a, b = ds[1], ds[1]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[0].shape == (3, 8, 8)
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0], a[0])


def test_cityscapes_missing_package_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_cityscapes(tmp_path)
    monkeypatch.setitem(sys.modules, "cityscapesscripts.helpers.labels", None)
    with pytest.raises(ImportError, match="pip install cityscapesscripts"):
        CityscapesDataset(root, "train")


# ---- bad data: every error names the file or folder -------------------------------------------
def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ADE20KDataset(tmp_path / "nowhere", "train")


def test_missing_split_folder(tmp_path: Path) -> None:
    root = make_lip(tmp_path)
    with pytest.raises(FileNotFoundError, match="test_images"):
        LIPDataset(root, "test")


def test_missing_split_list(tmp_path: Path) -> None:
    root = make_pascal_context(tmp_path)
    with pytest.raises(FileNotFoundError, match="trainval.txt"):
        PascalContextDataset(root, "trainval")


def test_missing_label_file(tmp_path: Path) -> None:
    root = make_coco_stuff(tmp_path)
    victim = root / "annotations" / "val2017" / f"{1:012d}.png"
    victim.unlink()
    with pytest.raises(DatasetError, match=str(victim)):
        COCOStuffDataset(root, "val")


def test_image_label_size_mismatch(tmp_path: Path) -> None:
    root = make_ade20k(tmp_path)
    label = root / "ADEChallengeData2016" / "annotations" / "training" / f"ADE_train_{0:08d}.png"
    write_label(label, ADE_RAW, size=(H + 1, W))
    with pytest.raises(DatasetError, match=f"{label}.*{W}x{H + 1}"):
        ADE20KDataset(root, "train")[0]


def test_corrupt_image(tmp_path: Path) -> None:
    root = make_lip(tmp_path)
    image = root / "TrainVal_images" / "train_images" / "0_train.jpg"
    image.write_bytes(b"definitely not a jpeg")
    with pytest.raises(DatasetError, match=f"{image}: cannot read image"):
        LIPDataset(root, "train")[0]


def test_truncated_image(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path)
    image = sorted((root / "leftImg8bit" / "val").glob("*/*.png"))[0]
    image.write_bytes(image.read_bytes()[:60])
    with pytest.raises(DatasetError, match="cannot read image"):
        CityscapesDataset(root, "val")[0]


@pytest.mark.parametrize(
    ("name", "bad_raw"),
    [("ade20k", 151), ("lip", 20), ("pascal_context", 60), ("coco_stuff", 200), ("cityscapes", 34)],
)
def test_label_value_out_of_range(tmp_path: Path, name: str, bad_raw: int) -> None:
    cls, make, split, *_ = CASES[name]
    root = make(tmp_path, raw=[0, bad_raw])
    with pytest.raises(DatasetError, match=rf"\.png: raw label values \[{bad_raw}\]"):
        cls(root, split)[0]


def test_rgb_label_rejected(tmp_path: Path) -> None:
    root = make_coco_stuff(tmp_path)
    label = root / "annotations" / "train2017" / f"{0:012d}.png"
    Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8)).save(label)
    with pytest.raises(DatasetError, match=f"{label}: a label map must be single-channel"):
        COCOStuffDataset(root, "train")[0]


# ---- synthetic -------------------------------------------------------------------------------
def test_synthetic_is_deterministic_and_valid() -> None:
    a = SyntheticShapes(length=6, size=(24, 32), num_classes=4, seed=5)
    b = SyntheticShapes(length=6, size=(24, 32), num_classes=4, seed=5)
    c = SyntheticShapes(length=6, size=(24, 32), num_classes=4, seed=6)
    for i in range(len(a)):
        (xa, ya), (xb, yb) = a[i], b[i]
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xa.shape == (3, 24, 32) and ya.shape == (24, 32) and ya.dtype == torch.int64
        assert 0 <= int(ya.min()) and int(ya.max()) < 4
    assert not torch.equal(a[0][0], c[0][0])
    with pytest.raises(IndexError):
        a[6]


def test_synthetic_independent_of_worker_count() -> None:
    ds = SyntheticShapes(length=8, size=(16, 16), seed=1, transform=paper_train_transforms((12, 12)))
    serial = list(DataLoader(ds, batch_size=2, num_workers=0))
    parallel = list(DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="fork"))
    for (xs, ys), (xp, yp) in zip(serial, parallel, strict=True):
        assert torch.equal(xs, xp) and torch.equal(ys, yp)


# ---- the registry ----------------------------------------------------------------------------
def test_registry_holds_every_dataset_and_its_class_count() -> None:
    from ocnet_edu.config import PAPER_DEFAULTS
    from ocnet_edu.data import DATASETS, NUM_CLASSES, DigitScenes

    assert set(DATASETS) == {"cityscapes", "ade20k", "lip", "pascal_context", "coco_stuff", "cocostuff10k", "synthetic",
                             "digits", "folder"}
    assert DATASETS["synthetic"] is SyntheticShapes and DATASETS["digits"] is DigitScenes
    assert NUM_CLASSES == {"cityscapes": 19, "ade20k": 150, "lip": 20, "pascal_context": 60, "coco_stuff": 171,
                           "cocostuff10k": 171, "digits": 11}
    for preset in PAPER_DEFAULTS.values():  # the presets read the class counts from the datasets
        assert preset["model"]["num_classes"] == NUM_CLASSES[preset["data"]["dataset"]]


def test_dataset_from_config_builds_each_kind(tmp_path: Path) -> None:
    from ocnet_edu.config import load_config
    from ocnet_edu.data import dataset_from_config

    root = make_lip(tmp_path / "lip")
    cfg = load_config(None, ["data.dataset=lip", "model.num_classes=20", f"data.root={root}", "runtime.seed=3"])
    lip = dataset_from_config(cfg, "train")
    assert isinstance(lip, LIPDataset) and lip.seed == 3 and len(lip) == len(LIPDataset(root, "train"))
    cfg = load_config(None, ["data.dataset=synthetic", "model.num_classes=4", "data.synthetic_length=8"])
    train, val = dataset_from_config(cfg, "train"), dataset_from_config(cfg, "val")
    assert (len(train), train.first_index, len(val), val.first_index) == (8, 0, 2, 8)
    with pytest.raises(ValueError, match="splits 'train' and 'val'"):
        dataset_from_config(cfg, "test")
    with pytest.raises(ValueError, match="unknown dataset 'cityscape'"):
        dataset_from_config(load_config(None, ["data.dataset=cityscape"]), "train")
    with pytest.raises(ValueError, match="generated"):
        build_dataset("synthetic", tmp_path, "train")
