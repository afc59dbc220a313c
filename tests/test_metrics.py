"""Metrics: confusion matrix vs brute force and by hand, Cityscapes script, boundary F, all-reduce."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from ocnet_edu.engine import distributed
from ocnet_edu.metrics import BoundaryFScore, ConfusionMatrix, boundary_map, dilate_disk


def random_maps(seed: int, k: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, k, shape, generator=g)
    target[torch.rand(shape, generator=g) < 0.15] = 255
    pred = torch.where(torch.rand(shape, generator=g) < 0.6, target, torch.randint(0, k, shape, generator=g))
    pred[pred == 255] = 0
    return pred, target


# ---- confusion matrix -----------------------------------------------------------------------
def test_hand_computed_example() -> None:
    # target        pred          (255 ignored)
    # 0 0 1         0 1 1
    # 1 2 255       1 1 0
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[0, 1, 1], [1, 1, 0]]), torch.tensor([[0, 0, 1], [1, 2, 255]]))
    assert cm.mat.tolist() == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]
    s = cm.compute()
    # IoU: class 0: 1/(2+1-1)=1/2; class 1: 2/(2+4-2)=1/2; class 2: 0/(1+0-0)=0
    assert s.iou.tolist() == [0.5, 0.5, 0.0]
    assert s.miou == pytest.approx(1 / 3)
    assert s.pixel_acc == pytest.approx(3 / 5)
    assert s.acc.tolist() == [0.5, 1.0, 0.0] and s.mean_acc == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(3))
def test_miou_equals_brute_force(seed: int) -> None:
    k = 6
    pred, target = random_maps(seed, k, (3, 17, 23))
    cm = ConfusionMatrix(k)
    for p, t in zip(pred, target):  # accumulate image by image
        cm.update(p, t)
    s = cm.compute()
    p, t = pred.numpy().ravel(), target.numpy().ravel()
    ious, accs = [], []
    for c in range(k):
        inter = sum(1 for a, b in zip(p, t) if b != 255 and a == c and b == c)
        union = sum(1 for a, b in zip(p, t) if b != 255 and (a == c or b == c))
        gt = sum(1 for b in t if b == c)
        ious.append(inter / union)
        accs.append(inter / gt)
    valid = t != 255
    assert s.iou.tolist() == pytest.approx(ious)
    assert s.miou == pytest.approx(sum(ious) / k)
    assert s.mean_acc == pytest.approx(sum(accs) / k)
    assert s.pixel_acc == pytest.approx(float((p[valid] == t[valid]).mean()))


def test_absent_class_is_nan_and_excluded() -> None:
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    s = cm.compute()
    assert math.isnan(s.iou[2]) and math.isnan(s.iou[3])
    assert s.miou == pytest.approx((0.5 + 0.5) / 2)


def test_scores_of_one_pixel_classes_and_of_an_empty_matrix() -> None:
    # class 0: one pixel, right (union 1, gt 1); class 1: one pixel, wrong (predicted 2);
    # class 3: absent from the target but predicted once (gt 0: accuracy NaN, IoU 0)
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([0, 2, 3, 2]), torch.tensor([0, 1, 2, 2]))
    s = cm.compute()
    assert s.iou[0] == 1.0 and s.acc[0] == 1.0
    assert s.iou[1] == 0.0 and s.acc[1] == 0.0
    assert s.iou[3] == 0.0 and math.isnan(s.acc[3])
    assert s.pixel_acc == 2 / 4
    one = ConfusionMatrix(2)
    one.update(torch.tensor([1]), torch.tensor([1]))
    assert one.compute().pixel_acc == 1.0  # a single scored pixel
    empty = ConfusionMatrix(3).compute()  # nothing scored yet: every score NaN, no error
    assert math.isnan(empty.pixel_acc) and math.isnan(empty.miou) and math.isnan(empty.mean_acc)
    assert torch.isnan(empty.iou).all() and torch.isnan(empty.acc).all()


def test_counts_stay_exact_past_float32_precision() -> None:
    # 2**24 + 1 is the first count a float32 matrix cannot hold; the matrix counts in integers
    cm = ConfusionMatrix(2)
    cm.update(torch.zeros(2**24, dtype=torch.uint8), torch.zeros(2**24, dtype=torch.uint8))
    cm.update(torch.zeros(1, dtype=torch.uint8), torch.zeros(1, dtype=torch.uint8))
    assert int(cm.mat[0, 0]) == 2**24 + 1


def test_state_lives_on_the_requested_device() -> None:
    # the meta device stands in for a GPU here: the accumulators (and the disk kernel of the
    # dilation) must follow the device they are given, or NCCL all-reduce and GPU updates fail
    assert ConfusionMatrix(3, device="meta").mat.device.type == "meta"
    bf = BoundaryFScore(3, (2,), device="meta")
    assert bf.f_sum.device.type == "meta" and bf.count.device.type == "meta"
    assert dilate_disk(torch.zeros(1, 5, 5, dtype=torch.bool, device="meta"), 2).device.type == "meta"


def test_dilation_kernel_is_made_on_the_masks_device(monkeypatch: pytest.MonkeyPatch) -> None:
    # CUDA refuses a convolution of tensors on two devices; the CPU and meta let a CPU kernel pass
    # with a meta mask, so the rule is checked by a stand-in convolution that enforces it
    conv2d = torch.nn.functional.conv2d
    devices = []

    def same_device_conv2d(x: torch.Tensor, weight: torch.Tensor, **kwargs: object) -> torch.Tensor:
        devices.append((x.device.type, weight.device.type))
        return conv2d(x, weight, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv2d", same_device_conv2d)
    dilate_disk(torch.zeros(1, 5, 5, dtype=torch.bool, device="meta"), 2)
    assert devices == [("meta", "meta")]


def test_reduce_sums_every_accumulator_over_the_given_group(monkeypatch: pytest.MonkeyPatch) -> None:
    # a stand-in for a two-rank world whose other rank holds the same sums: all_reduce doubles
    groups = []

    def all_reduce(tensor: torch.Tensor, op: object, group: object) -> None:
        groups.append(group)
        tensor.mul_(2)

    monkeypatch.setattr(distributed, "_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "all_reduce", all_reduce)
    pred, target = random_maps(7, 3, (2, 8, 9))
    cm, bf = ConfusionMatrix(3), BoundaryFScore(3, (1, 2))
    cm.update(pred, target)
    bf.update(pred, target)
    mat, f_sum, count = cm.mat.clone(), bf.f_sum.clone(), bf.count.clone()
    group = object()
    assert cm.reduce_(group) is cm and bf.reduce_(group) is bf
    assert torch.equal(cm.mat, 2 * mat) and torch.equal(bf.f_sum, 2 * f_sum) and torch.equal(bf.count, 2 * count)
    assert groups == [group, group, group]


def test_invalid_inputs() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="target"):
        cm.update(torch.zeros(2, dtype=torch.long), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="pred"):
        cm.update(torch.tensor([0, 7]), torch.tensor([0, 1]))
    cm.update(torch.tensor([9]), torch.tensor([255]))  # ignored pixel: prediction not checked
    assert int(cm.mat.sum()) == 0


def test_matches_cityscapes_evaluation_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Our IoU per class == ``evalPixelLevelSemanticLabeling`` on label-id PNGs (GT with ignored
    ids, predictions as label ids of the 19 classes)."""
    ev = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    from cityscapesscripts.helpers.labels import labels

    from ocnet_edu.data import cityscapes_lut

    if not hasattr(np, "in1d"):  # removed in NumPy 2.x, still called by the script
        monkeypatch.setattr(np, "in1d", np.isin, raising=False)
    lut = torch.from_numpy(cityscapes_lut().astype(np.int64))
    train_to_id = {lab.trainId: lab.id for lab in labels if 0 <= lab.trainId < 255}
    all_ids = torch.tensor([lab.id for lab in labels if lab.id >= 0])
    cm = ConfusionMatrix(19)
    preds, gts = [], []
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        gt_ids = all_ids[torch.randint(0, len(all_ids), (24, 40), generator=g)]
        gt_train = lut[gt_ids]
        pred_train = torch.where(
            (torch.rand(24, 40, generator=g) < 0.5) & (gt_train != 255), gt_train, torch.randint(0, 19, (24, 40), generator=g)
        )
        cm.update(pred_train, gt_train)
        pred_ids = pred_train.clone().apply_(lambda t: train_to_id[t])
        for kind, arr, store in (("pred", pred_ids, preds), ("gt", gt_ids, gts)):
            path = tmp_path / f"{kind}_{i}.png"
            Image.fromarray(arr.numpy().astype(np.uint8), mode="L").save(path)
            store.append(str(path))
    args = ev.args
    monkeypatch.setattr(args, "evalInstLevelScore", False)
    monkeypatch.setattr(args, "evalPixelAccuracy", False)
    monkeypatch.setattr(args, "JSONOutput", False)
    monkeypatch.setattr(args, "quiet", True)
    result = ev.evaluateImgLists(preds, gts, args)
    names = [None] * 19
    for lab in labels:
        if 0 <= lab.trainId < 255:
            names[lab.trainId] = lab.name
    ours = cm.compute()
    theirs = [result["classScores"][n] for n in names]
    assert ours.iou.tolist() == pytest.approx(theirs)
    assert ours.miou == pytest.approx(result["averageScoreClasses"])


# ---- boundary F -----------------------------------------------------------------------------
def brute_boundary(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    out = np.zeros_like(mask)
    for y in range(h):
        for x in range(w):
            for dy, dx in ((0, 1), (1, 0), (1, 1)):
                if y + dy < h and x + dx < w and mask[y, x] != mask[y + dy, x + dx]:
                    out[y, x] = True
    return out


def brute_f(pred: np.ndarray, target: np.ndarray, c: int, d: int) -> float | None:
    """Per-image boundary F of class c by explicit point-to-point distances (None: both empty)."""
    valid = target != 255
    bp = np.argwhere(brute_boundary((pred == c) & valid))
    bg = np.argwhere(brute_boundary((target == c) & valid))
    if len(bp) == 0 and len(bg) == 0:
        return None
    if len(bp) == 0 or len(bg) == 0:
        return 0.0
    dist2 = ((bp[:, None, :] - bg[None, :, :]) ** 2).sum(-1)
    precision = float((dist2.min(1) <= d * d).mean())
    recall = float((dist2.min(0) <= d * d).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def test_boundary_map_and_disk() -> None:
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[0, 2:4, 2:4] = True
    assert torch.equal(boundary_map(mask)[0], torch.from_numpy(brute_boundary(mask[0].numpy())))
    point = torch.zeros(1, 9, 9, dtype=torch.bool)
    point[0, 4, 4] = True
    disk = dilate_disk(point, 2)[0]
    yy, xx = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
    assert torch.equal(disk, (yy - 4) ** 2 + (xx - 4) ** 2 <= 4)
    assert torch.equal(dilate_disk(mask, 0), mask)
    with pytest.raises(ValueError, match="radius"):
        dilate_disk(mask, -1)
    with pytest.raises(ValueError, match="tolerances"):
        BoundaryFScore(2, tolerances=(3, -1))
    with pytest.raises(ValueError, match="tolerances"):
        BoundaryFScore(2, tolerances=())
    exact = BoundaryFScore(2, tolerances=(0,))  # tolerance 0: boundaries must coincide
    exact.update(torch.tensor([[0, 1], [0, 1]]), torch.tensor([[0, 1], [0, 1]]))
    assert exact.compute().mean[0] == 1.0


def test_boundary_f_hand_example() -> None:
    # a 10×10 square, predicted 2 rows too low: the horizontal edges are 2 px off
    target = torch.zeros(20, 20, dtype=torch.long)
    target[5:15, 5:15] = 1
    pred = torch.zeros_like(target)
    pred[7:17, 5:15] = 1
    bf = BoundaryFScore(2, tolerances=(1, 2))
    bf.update(pred, target)
    scores = bf.compute()
    # both boundaries have 40 pixels; at d=2 every pixel is matched
    assert scores.per_class[2].tolist() == [1.0, 1.0]
    # at d=1: for each map, its 8 vertical-edge pixels of each side shared with... counted by brute force
    assert scores.per_class[1][1] == pytest.approx(brute_f(pred.numpy(), target.numpy(), 1, 1))
    assert scores.per_class[1][1] < 1.0


@pytest.mark.parametrize("seed", range(3))
def test_boundary_f_matches_brute_force(seed: int) -> None:
    k, tols = 3, (1, 2, 3)
    g = torch.Generator().manual_seed(seed)
    # blobby maps: upsampled coarse random labels, prediction = shifted target with noise
    coarse = torch.randint(0, k, (2, 1, 4, 5), generator=g).float()
    target = torch.nn.functional.interpolate(coarse, size=(16, 20), mode="nearest")[:, 0].long()
    target[:, :3, :3] = 255
    pred = torch.roll(target, shifts=(1, 2), dims=(1, 2)).clamp(max=k - 1)
    pred[torch.rand(pred.shape, generator=g) < 0.05] = 0
    bf = BoundaryFScore(k, tolerances=tols)
    bf.update(pred, target)
    got = bf.compute()
    for ti, d in enumerate(tols):
        for c in range(k):
            per_image = [brute_f(p.numpy(), t.numpy(), c, d) for p, t in zip(pred, target)]
            per_image = [f for f in per_image if f is not None]
            want = sum(per_image) / len(per_image) if per_image else float("nan")
            # to double precision: the per-class sums accumulate in float64
            assert float(got.per_class[d][c]) == pytest.approx(want, rel=1e-12, nan_ok=True)


def test_boundary_f_perfect_and_empty_conventions() -> None:
    target = torch.zeros(2, 12, 12, dtype=torch.long)
    target[0, 3:8, 3:8] = 1
    skip, count = BoundaryFScore(3, (3,)), BoundaryFScore(3, (3,), count_empty=True)
    for bf in (skip, count):
        bf.update(target.clone(), target)
    assert skip.compute().per_class[3].tolist()[:2] == [1.0, 1.0]
    assert math.isnan(skip.compute().per_class[3][2])  # class 2 never present
    assert count.compute().per_class[3].tolist() == [1.0, 1.0, 1.0]
    missed = BoundaryFScore(3, (3,))
    missed.update(torch.zeros(12, 12, dtype=torch.long), target[0])
    assert float(missed.compute().per_class[3][1]) == 0.0  # object missed entirely: F = 0


def test_boundary_f_grows_with_tolerance() -> None:
    pred, target = random_maps(4, 3, (2, 20, 20))
    bf = BoundaryFScore(3, tolerances=(1, 3, 5, 9))
    bf.update(pred, target)
    means = [bf.compute().mean[d] for d in (1, 3, 5, 9)]
    assert means == sorted(means) and means[0] < means[-1]


# ---- distributed reduce ---------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reduce_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        pred, target = random_maps(100 + rank, 4, (2, 10, 12))
        cm, bf = ConfusionMatrix(4), BoundaryFScore(4, (2,))
        cm.update(pred, target)
        bf.update(pred, target)
        cm.reduce_()
        bf.reduce_()
        torch.save({"mat": cm.mat, "f_sum": bf.f_sum, "count": bf.count}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_reduce_across_two_gloo_ranks(tmp_path: Path) -> None:
    mp.spawn(_reduce_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    cm, bf = ConfusionMatrix(4), BoundaryFScore(4, (2,))
    for rank in range(2):
        pred, target = random_maps(100 + rank, 4, (2, 10, 12))
        cm.update(pred, target)
        bf.update(pred, target)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(got["mat"], cm.mat)
        assert torch.allclose(got["f_sum"], bf.f_sum) and torch.equal(got["count"], bf.count)


def test_reduce_is_noop_without_process_group() -> None:
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    before = cm.mat.clone()
    assert torch.equal(cm.reduce_().mat, before)
