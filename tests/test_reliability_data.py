"""Reliability of the data pipeline: every image read error names its file, and the augmentation
(hence the trained weights) does not depend on the number of threads or DataLoader workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ocnet_edu.config import load_config
from ocnet_edu.data import DatasetError
from ocnet_edu.data.datasets import load_label, load_rgb
from ocnet_edu.data.transforms import RandomScale, torch_threads
from ocnet_edu.engine import checkpoint as ckpt
from ocnet_edu.engine.train import train

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = ROOT / "configs" / "synthetic.yaml"


def test_decompression_bomb_error_names_the_file(tmp_path, monkeypatch):
    """Pillow refuses images over 2 × MAX_IMAGE_PIXELS (a 13500×13400 PNG by default) with an
    error that is not an OSError; the readers must still name the file."""
    image, label = tmp_path / "huge.png", tmp_path / "huge_label.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(label)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 4096 pixels > 2 × 100: a "bomb"
    with pytest.raises(DatasetError, match=r"huge\.png.*MAX_IMAGE_PIXELS"):
        load_rgb(image)
    with pytest.raises(DatasetError, match=r"huge_label\.png.*MAX_IMAGE_PIXELS"):
        load_label(label)


def test_any_read_error_names_the_file(tmp_path):
    not_png = tmp_path / "broken.png"
    not_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    for reader in (load_rgb, load_label):
        with pytest.raises(DatasetError, match="broken.png"):
            reader(not_png)
        with pytest.raises(DatasetError, match="missing.png"):
            reader(tmp_path / "missing.png")


def test_random_scale_does_not_depend_on_the_thread_count():
    image = torch.rand(3, 61, 67, generator=torch.Generator().manual_seed(0)) * 255
    label = torch.randint(0, 5, (61, 67), generator=torch.Generator().manual_seed(1))
    scale = RandomScale((0.5, 2.0))
    outputs = []
    for threads in (1, 2, 4):
        with torch_threads(threads):
            for seed in range(4):
                outputs.append((threads, seed, scale(image, label, torch.Generator().manual_seed(seed))))
    for threads, seed, (img, lab) in outputs:
        ref_img, ref_lab = outputs[seed][2]
        assert torch.equal(img, ref_img) and torch.equal(lab, ref_lab), (threads, seed)
    # ... and it is the one-thread result, which a DataLoader worker (one thread) computes too
    for _, seed, (img, _) in outputs[:4]:
        with torch_threads(1):
            one_thread = torch.nn.functional.interpolate(image[None], size=img.shape[1:], mode="bilinear")[0]
        assert torch.equal(img, one_thread), seed
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_weights_identical_with_0_and_2_workers(tmp_path):
    """Same run, in the main process (on 4 threads) and in two DataLoader worker processes:
    bit-identical final weights (the docstrings promise independence from the worker count)."""
    overrides = ["schedule.max_iters=4", "schedule.batch_size=4", "schedule.checkpoint_every=100",
                 "data.synthetic_length=16"]
    weights = {}
    for workers in (0, 2):
        cfg = load_config(SYNTHETIC, [*overrides, f"runtime.workers={workers}", f"runtime.out_dir={tmp_path / str(workers)}"])
        with torch_threads(4):  # the main process on several threads, the workers on one
            train(cfg, progress=False)
        weights[workers] = ckpt.load(tmp_path / str(workers) / "final.pt")["model"]
    assert weights[0].keys() == weights[2].keys()
    different = [k for k in weights[0] if not torch.equal(weights[0][k], weights[2][k])]
    assert not different, different[:5]
