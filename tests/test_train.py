"""The training stack at CPU scale: loss decreases, exact resume, torchrun (gloo) == one process,
evaluation, CLI errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ocnet_edu.engine import checkpoint as ckpt
from ocnet_edu.config import load_config
from ocnet_edu.engine.train import epoch_batches, train

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = ROOT / "configs" / "synthetic.yaml"


def config(tmp_path, *overrides):
    return load_config(SYNTHETIC, [f"runtime.out_dir={tmp_path}", *overrides])


def read_losses(path):
    lines = (Path(path) / "metrics.csv").read_text().splitlines()[1:]
    return [float(line.split(",")[1]) for line in lines]


def test_loss_decreases_and_run_directory(tmp_path):
    summary = train(config(tmp_path), progress=False)
    losses = read_losses(tmp_path)
    assert len(losses) == summary["iterations"] == 60
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:5]) / 5
    assert {"config.yaml", "metrics.csv", "checkpoint.pt", "final.pt"} <= {p.name for p in tmp_path.iterdir()}
    saved = load_config(tmp_path / "config.yaml")
    assert saved.runtime.out_dir == str(tmp_path) and saved.model.context == "base_oc_isa"
    state = ckpt.load(tmp_path / "checkpoint.pt")
    assert state["iteration"] == 60 and {"model", "optimizer", "scheduler", "scaler", "rng"} <= set(state)


def test_resume_gives_the_same_weights(tmp_path):
    overrides = ("schedule.max_iters=24", "schedule.checkpoint_every=100", "model.dropout=0.1")
    train(config(tmp_path / "straight", *overrides), progress=False)
    stopped = train(config(tmp_path / "resumed", *overrides), progress=False, stop_after=13)
    assert stopped["stopped"] and stopped["iterations"] == 13
    train(config(tmp_path / "resumed", *overrides), resume=True, progress=False)
    a = ckpt.load(tmp_path / "straight" / "final.pt")["model"]
    b = ckpt.load(tmp_path / "resumed" / "final.pt")["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert read_losses(tmp_path / "straight") == read_losses(tmp_path / "resumed")


def test_epoch_batches_split_global_batches_across_ranks():
    single = epoch_batches(20, 4, 1, 0, seed=3, epoch=1)
    ranks = [epoch_batches(20, 4, 2, r, seed=3, epoch=1) for r in range(2)]
    assert len(single) == 5
    for step, batch in enumerate(single):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(batch)
    assert epoch_batches(20, 4, 1, 0, seed=3, epoch=2) != single  # a new order every epoch
    with pytest.raises(ValueError, match="not divisible"):
        epoch_batches(20, 3, 2, 0, 0, 0)
    with pytest.raises(ValueError, match="fewer than one batch"):
        epoch_batches(3, 4, 1, 0, 0, 0)


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    """Two gloo processes with half the batch each vs one process with the whole batch.

    They see the same samples at every step and DDP averages the gradients. Two things would
    legitimately differ and are switched off here: batch-norm statistics of half batches
    (SyncBatchNorm, used on GPUs, does not run on the CPU: ``freeze_bn``), and unequal numbers
    of labelled pixels per process (no scaling, hence no padding). What remains must agree to
    float precision."""
    overrides = ["schedule.max_iters=12", "schedule.checkpoint_every=100", "runtime.freeze_bn=true",
                 "data.scale_range=[1.0,1.0]"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
               "-m", "ocnet_edu", "train", "--config", str(SYNTHETIC), "--no-progress",
               f"runtime.out_dir={tmp_path / 'ddp'}", *overrides]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2
    train(config(tmp_path / "single", *overrides), progress=False)
    ddp = ckpt.load(tmp_path / "ddp" / "final.pt")["model"]
    single = ckpt.load(tmp_path / "single" / "final.pt")["model"]
    torch.manual_seed(0)
    from ocnet_edu.engine.builders import build_model

    initial = build_model(config(tmp_path / "x", *overrides)).state_dict()
    weights = [k for k in single if k.endswith("weight") and single[k].dtype.is_floating_point]
    gap = sum((ddp[k] - single[k]).norm() ** 2 for k in weights) ** 0.5
    moved = sum((single[k] - initial[k]).norm() ** 2 for k in weights) ** 0.5
    assert gap < 1e-4 * moved, (gap, moved)
    ddp_losses, single_losses = read_losses(tmp_path / "ddp"), read_losses(tmp_path / "single")
    assert ddp_losses[-1] < ddp_losses[0]
    assert abs(ddp_losses[0] - single_losses[0]) < 0.05 * single_losses[0]


@pytest.mark.slow
def test_evaluate_cli(tmp_path):
    train(config(tmp_path, "schedule.max_iters=30"), progress=False)
    out = tmp_path / "scores.json"
    command = [sys.executable, "-m", "ocnet_edu", "evaluate", "--config", str(tmp_path / "config.yaml"),
               "--checkpoint", str(tmp_path / "final.pt"), "--flip", "--scales", "0.75", "1", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads(out.read_text())
    assert 0.0 <= scores["miou"] <= 1.0 and 0.5 < scores["pixel_acc"] <= 1.0
    assert set(scores["boundary_f"]) == {"3", "5", "9", "12"}
    assert scores["scales"] == [0.75, 1.0] and scores["flip"] is True


@pytest.mark.slow
def test_cli_rejects_bad_config_keys(tmp_path):
    command = [sys.executable, "-m", "ocnet_edu", "train", "--config", str(SYNTHETIC), "optim.learning_rate=0.1"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert "optim.learning_rate" in done.stderr and "lr" in done.stderr


def test_synthetic_validation_shares_the_palette_but_not_the_scenes(tmp_path):
    from ocnet_edu.engine.builders import build_eval_dataset, build_train_dataset

    cfg = config(tmp_path)
    train_set, val_set = build_train_dataset(cfg), build_eval_dataset(cfg)
    assert (train_set.palette == val_set.palette).all()
    assert val_set.first_index == len(train_set)
    _, train_label = train_set.generate(0)
    _, val_label = val_set.generate(0)
    assert not (train_label == val_label).all()


def test_bf16_autocast_channels_last_and_ohem_train(tmp_path):
    """The GPU switches run on the CPU too: bf16 autocast, channels_last, OHEM, class weights."""
    cfg = config(tmp_path, "schedule.max_iters=4", "runtime.amp=true", "runtime.amp_dtype=bfloat16",
                 "runtime.channels_last=true", "loss.ohem=true", "loss.ohem_min_kept=1000",
                 "loss.class_weights=[1.0,2.0,2.0,2.0,2.0]")
    summary = train(cfg, progress=False)
    assert summary["iterations"] == 4 and all(map(lambda v: v == v, read_losses(tmp_path)))  # no NaN
    with pytest.raises(ValueError, match="float16 autocast needs a GPU"):
        train(config(tmp_path / "fp16", "runtime.amp=true", "runtime.amp_dtype=float16"), progress=False)


def test_ranks_come_from_torchrun_variables_until_a_group_exists(monkeypatch):
    from ocnet_edu.engine import distributed

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.shard(5) == range(5) and distributed.all_gather_object("x") == ["x"]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not distributed.is_main() and list(distributed.shard(5)) == [1, 3]
