"""What a run writes and reads back about itself: the metrics log, the model-config comparison of a
checkpoint, the refusal of a final.pt, the scaler state, the epoch of a loader's samples."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ocnet_edu.engine import checkpoint as ckpt
from ocnet_edu.engine.loader import EpochKeyed
from ocnet_edu.engine.run_dir import WriteError
from ocnet_edu.engine.train import _load_scaler
from ocnet_edu.engine.train_log import MetricsWriter, _complete, read_rows


def test_a_row_is_complete_when_every_field_is_a_number_and_only_the_loss_may_be_nan():
    row = {"iteration": "3", "loss": "0.5", "lr": "0.01", "images_per_s": "2.0"}
    assert _complete(row) and _complete({**row, "loss": "nan"})
    for field in ("iteration", "lr", "images_per_s"):
        assert not _complete({**row, field: "nan"})
    assert not _complete({**row, "lr": None}) and not _complete({k: v for k, v in row.items() if k != "lr"})


def test_the_metrics_log_writes_rows_and_tensorboard_and_names_itself_when_it_cannot(tmp_path):
    path = tmp_path / "metrics.csv"
    writer = MetricsWriter(path, 0)
    logged = []
    writer.tensorboard = type("Board", (), {"add_scalar": lambda self, *args: logged.append(args)})()
    writer.write(1, 0.5, 0.01, 2.0)
    writer.write(2, float("nan"), 0.009, 2.5)
    assert logged == [("train/loss", 0.5, 1), ("train/lr", 0.01, 1), ("train/loss", logged[2][1], 2), ("train/lr", 0.009, 2)]
    assert [r["iteration"] for r in read_rows(path, 1)] == ["1"] and len(read_rows(path, 2)) == 2
    path.unlink()
    path.mkdir()  # the log can no longer be opened for appending
    with pytest.raises(WriteError, match=rf"^could not write the metrics log {path} \(IsADirectoryError: "):
        writer.write(3, 0.4, 0.008, 2.0)


def test_a_model_config_mismatch_lists_every_differing_leaf_with_absent_keys_named(tmp_path):
    saved = {ckpt.MODEL_CONFIG: {"backbone": "resnet50", "options": {"groups": [8, 8], "old": 1}, "num_classes": 19}}
    wanted = {"backbone": "resnet101", "options": {"groups": [8, 8], "new": 2}, "num_classes": 19, 3: "x"}
    with pytest.raises(ckpt.CheckpointError) as error:
        ckpt.check_model_config(saved, wanted, tmp_path / "c.pt")
    assert str(error.value) == (
        f"the checkpoint {tmp_path / 'c.pt'} was trained with another model than the config describes:\n"
        "  model.3: checkpoint '<absent>', config 'x'\n"
        "  model.backbone: checkpoint 'resnet50', config 'resnet101'\n"
        "  model.options.new: checkpoint '<absent>', config 2\n"
        "  model.options.old: checkpoint 1, config '<absent>'\n"
        "use the run's own config.yaml, or set these keys to the checkpoint's values")
    # a dict against a value is one difference, not a walk into the dict
    with pytest.raises(ckpt.CheckpointError, match=r"model\.options: checkpoint 5, config \{'a': 1\}"):
        ckpt.check_model_config({ckpt.MODEL_CONFIG: {"options": 5}}, {"options": {"a": 1}}, "c.pt")
    ckpt.check_model_config({ckpt.MODEL_CONFIG: {"pretrained": "a.pth", "x": 1}}, {"pretrained": "b.pth", "x": 1}, "c.pt")


def test_a_final_checkpoint_is_refused_for_resuming_naming_what_it_lacks():
    with pytest.raises(ckpt.CheckpointError, match=r"^final\.pt is not a training checkpoint: it lacks "
                                                   + ", ".join(k for k in ckpt.TRAINING_KEYS if k != "model") + r" \("):
        ckpt.require_training_checkpoint({"model": {}}, "final.pt")


def test_an_empty_scaler_state_leaves_an_enabled_scaler_fresh_and_says_so(capsys):
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=8.0)
    _load_scaler(scaler, {}, announce=True)
    assert capsys.readouterr().out == ("the checkpoint has no gradient-scaler state (it was saved without float16 "
                                       "autocast); runtime.amp_dtype=float16 starts a fresh scaler\n")
    assert scaler.get_scale() == 8.0
    _load_scaler(scaler, {}, announce=False)
    assert capsys.readouterr().out == ""  # said once, by the rank that announces


class Stream(torch.utils.data.Dataset):
    """A dataset whose samples depend on the epoch, counting how often the epoch is set."""

    def __init__(self):
        self.epoch, self.settings = 0, 0

    def set_epoch(self, epoch):
        self.epoch, self.settings = epoch, self.settings + 1

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return self.epoch * 10 + index


def test_epoch_keyed_samples_set_the_epoch_only_when_it_changes():
    data = Stream()
    keyed = EpochKeyed(data)
    assert [keyed[(0, 1)], keyed[(2, 1)], keyed[(2, 3)], keyed[(1, 0)]] == [1, 21, 23, 10]
    assert data.settings == 2 and len(keyed) == 4  # epoch 0 is already set; 2 and 1 are set once each
    assert EpochKeyed([5, 6])[(3, 1)] == 6  # a dataset without epochs is indexed as it is
    fresh = Stream()
    del fresh.epoch  # no epoch attribute yet: the first sample sets it
    assert EpochKeyed(fresh)[(0, 2)] == 2 and fresh.settings == 1


def test_a_training_step_report_logs_the_mean_throughput_since_the_last_report(tmp_path, monkeypatch):
    from ocnet_edu.engine import train_log

    clock = iter([100.0, 102.0, 105.0, 105.5])  # the log is made at 100 s; reports at 102 s, 105 s and 105.5 s
    monkeypatch.setattr(train_log.time, "perf_counter", lambda: next(clock))
    log = train_log.TrainLog(tmp_path / "metrics.csv", start=0, max_iters=10, batch_size=4, progress=False)
    shown = []
    log.bar = type("Bar", (), {"set_postfix": lambda self, **kw: shown.append(kw), "update": lambda self, n: shown.append(n),
                               "close": lambda self: None})()
    log.step(2, 0.5, 0.01)  # 2 steps of 4 images in 2 s
    log.step(5, 0.25, 0.005)  # 3 more steps in 3 s
    log.step(6, 0.125, 0.0025)  # 1 step in half a second: a rate over less than a second is not capped
    assert shown == [{"loss": "0.500", "lr": "1.00e-02", "img_s": "4.0"}, 2,
                     {"loss": "0.250", "lr": "5.00e-03", "img_s": "4.0"}, 3,
                     {"loss": "0.125", "lr": "2.50e-03", "img_s": "8.0"}, 1]
    assert log.last_loss == 0.125
    rows = read_rows(tmp_path / "metrics.csv", 10)
    assert [(r["iteration"], r["loss"], r["images_per_s"]) for r in rows] == [
        ("2", "0.500000", "4.000"), ("5", "0.250000", "4.000"), ("6", "0.125000", "8.000")]


def test_the_train_loader_has_no_workers_and_no_pinned_memory_by_default():
    from ocnet_edu.engine.loader import train_loader

    loader = train_loader(list(range(8)), 2, 1, 0, seed=0, start=0, stop=2)
    assert loader.num_workers == 0 and loader.pin_memory is False and loader.persistent_workers is False
    assert train_loader(list(range(8)), 2, 1, 0, 0, 0, 2, workers=1, pin_memory=True).pin_memory is True
    assert train_loader(list(range(8)), 2, 1, 0, 0, 0, 2, workers=1).persistent_workers is True
    assert [batch.tolist() for batch in loader] == [batch.tolist() for batch in train_loader(list(range(8)), 2, 1, 0, 0, 0, 2)]


def test_epoch_batches_accept_the_smallest_sizes_and_seed_each_epoch_apart():
    from ocnet_edu.engine.loader import epoch_batches

    assert epoch_batches(1, 1, 1, 0, seed=0, epoch=0) == [[0]]  # one sample, batches of one: one step
    assert sorted(sum(epoch_batches(6, 3, 1, 0, 0, 0), [])) == [0, 1, 2, 3, 4, 5]
    # the permutation of epoch e is randperm seeded with seed · 1_000_003 + e (pinned: runs must repeat)
    order = torch.randperm(8, generator=torch.Generator().manual_seed(2 * 1_000_003 + 3)).tolist()
    assert epoch_batches(8, 4, 2, 1, seed=2, epoch=3) == [order[1:4:2], order[5:8:2]]
    with pytest.raises(ValueError, match="^the dataset has 3 samples, fewer than one batch of 4$"):
        epoch_batches(3, 4, 1, 0, 0, 0)


def test_training_batches_come_from_one_loader_with_the_config_workers_and_no_pinning_on_the_cpu(monkeypatch):
    from ocnet_edu.config import load_config
    from ocnet_edu.engine import distributed, train

    calls = []
    monkeypatch.setattr(train, "train_loader", lambda *args, **kwargs: calls.append((args, kwargs)) or iter([1, 2]))
    cfg = load_config("configs/synthetic.yaml", ["runtime.workers=3", "schedule.max_iters=7", "runtime.seed=5"])
    ctx = distributed.DistributedContext(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"))
    assert list(train._batches("data", cfg, ctx, 4)) == [1, 2]
    assert calls == [(("data", 8, 2, 1, 5, 4, 7, 3), {"pin_memory": False})]
    on_gpu = distributed.DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cuda", 0))
    list(train._batches("data", cfg, on_gpu, 0))  # (a device object only: nothing runs on it)
    assert calls[-1][1] == {"pin_memory": True}


def test_the_progress_bar_of_training_counts_iterations_from_the_start(monkeypatch):
    import tqdm

    from ocnet_edu.engine import train_log

    bars = []
    monkeypatch.setattr(tqdm, "tqdm", lambda **options: bars.append(options) or "bar")
    log = train_log.TrainLog(None, start=3, max_iters=10, batch_size=2, progress=True)
    assert log.writer is None and math.isnan(log.last_loss) and log.bar == "bar"
    train_log.TrainLog(None, start=0, max_iters=5, batch_size=2, progress=False)
    assert bars == [dict(total=10, initial=3, disable=False, desc="train", unit="it", dynamic_ncols=True),
                    dict(total=5, initial=0, disable=True, desc="train", unit="it", dynamic_ncols=True)]


def test_build_train_dataset_applies_the_paper_augmentations_at_the_crop_size():
    from ocnet_edu.config import load_config
    from ocnet_edu.engine.builders import build_train_dataset

    cfg = load_config("configs/synthetic.yaml", ["data.crop_size=[24, 40]", "data.synthetic_length=4"])
    image, label = build_train_dataset(cfg)[0]
    assert image.shape == (3, 24, 40) and label.shape == (24, 40) and image.dtype == torch.float32


def test_build_train_dataset_hands_every_augmentation_option_of_the_config_and_the_datasets_flip_pairs_on(monkeypatch):
    from ocnet_edu.config import load_config
    from ocnet_edu.data.datasets import LIPDataset
    from ocnet_edu.data.transforms import RandomBrightness, RandomCrop, RandomHorizontalFlip, RandomScale
    from ocnet_edu.engine import builders

    made = []
    monkeypatch.setattr(builders, "dataset_from_config", lambda cfg, split, transform: made.append((split, transform)))
    for hflip in (True, False):
        cfg = load_config("configs/synthetic.yaml", [
            "data.dataset=lip", "model.num_classes=20", "data.split=train", "data.crop_size=[24, 40]",
            "data.scale_range=[0.75, 1.5]", "data.brightness=4.0", "data.base_size=48", f"data.hflip={str(hflip).lower()}"])
        builders.build_train_dataset(cfg)
        split, transform = made.pop()
        flip, scale, brightness, crop = transform.transforms[:4]
        assert split == "train" and isinstance(flip, RandomHorizontalFlip) and isinstance(crop, RandomCrop)
        assert flip.p == (0.5 if hflip else 0.0) and flip.pairs == LIPDataset.flip_pairs != ()
        assert isinstance(scale, RandomScale) and scale.scale_range == (0.75, 1.5) and scale.base_size == 48
        assert isinstance(brightness, RandomBrightness) and brightness.delta == 4.0 and crop.crop_size == (24, 40)


def test_resuming_the_metrics_log_keeps_the_rows_up_to_the_start_and_a_failed_log_names_itself(tmp_path):
    path = tmp_path / "metrics.csv"
    writer = MetricsWriter(path, 0)
    for iteration in (1, 2, 3):
        writer.write(iteration, iteration / 10, 0.01, 2.0)
    resumed = MetricsWriter(path, 1)  # resumed after iteration 1: rows 2 and 3 are dropped
    assert [r["iteration"] for r in read_rows(path, 10)] == ["1"] and resumed.last_loss == 0.1
    fresh = MetricsWriter(path, 0)  # a new run from scratch: an empty log
    assert read_rows(path, 10) == [] and math.isnan(fresh.last_loss)
    (tmp_path / "a_file").write_text("")  # a file where the log's folder should be
    with pytest.raises(WriteError, match=rf"^could not write the metrics log {tmp_path / 'a_file' / 'm.csv'}"):
        MetricsWriter(tmp_path / "a_file" / "m.csv", 0)


def test_read_loss_keeps_the_precision_of_the_loss_and_needs_a_step():
    from types import SimpleNamespace

    from ocnet_edu.engine import distributed
    from ocnet_edu.engine.train import read_loss

    ctx = distributed.DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    state = SimpleNamespace(loss_sum=torch.tensor(1.0, dtype=torch.float64), loss_steps=3,
                            first_nonfinite=torch.tensor(0, dtype=torch.long))
    assert read_loss(state, ctx) == 1 / 3  # exact in float64 (float32 would give 0.3333333432674408)
    assert state.loss_sum is None and state.loss_steps == 0
    with pytest.raises(RuntimeError, match="^read_loss needs at least one train_step since the last call$"):
        read_loss(state, ctx)


@pytest.mark.parametrize("other_bad", [0, 5])
def test_read_loss_averages_over_ranks_and_names_every_rank_with_a_non_finite_loss(monkeypatch, other_bad):
    """Rank 1 of 2, with a stand-in all-reduce that adds rank 0's report ``[mean 0.25, bad iteration, 0]``."""
    from types import SimpleNamespace

    from ocnet_edu.engine import distributed, train

    monkeypatch.setattr(train.distributed, "all_reduce_sum",
                        lambda report: report.add_(torch.tensor([0.25, float(other_bad), 0.0], dtype=report.dtype)))
    ctx = distributed.DistributedContext(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"))

    def state(bad):
        return SimpleNamespace(loss_sum=torch.tensor(1.5, dtype=torch.float64), loss_steps=2,
                               first_nonfinite=torch.tensor(bad))

    if other_bad == 0:
        assert train.read_loss(state(0), ctx) == (0.75 + 0.25) / 2
    with pytest.raises(FloatingPointError) as error:
        train.read_loss(state(3), ctx)
    where = "process 1 at iteration 3" if other_bad == 0 else "process 0 at iteration 5, process 1 at iteration 3"
    count = 1 if other_bad == 0 else 2
    assert str(error.value) == (f"the loss was not finite ({where}; {count} of 2 process(es)); every process stops. "
                                "Try a lower optim.lr, or runtime.amp_dtype=bfloat16 / runtime.amp=false")


def test_rng_states_round_trip_with_numpys_keys_as_int64():
    import numpy as np

    saved = ckpt.rng_state()
    assert saved["numpy"][1].dtype == torch.int64 and "cuda" not in saved  # no CUDA here
    expected = (torch.rand(3), np.random.rand(3))
    ckpt.set_rng_state(saved)
    again = (torch.rand(3), np.random.rand(3))
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])


def test_a_run_directory_is_refused_naming_at_most_six_of_its_entries_or_as_a_file(tmp_path):
    from ocnet_edu.engine.run_dir import RunDirectoryError, check_run_directory

    def refusal(folder):
        with pytest.raises(RunDirectoryError) as error:
            check_run_directory(folder, resume=False, overwrite=False)
        return str(error.value)

    ways_out = ("training from scratch would overwrite its metrics and checkpoints. Use --resume to continue that run, "
                "--overwrite to replace it (train(..., overwrite=True)), or another runtime.out_dir")
    run = tmp_path / "run"
    run.mkdir()
    check_run_directory(run, resume=False, overwrite=False)  # empty: fine
    for name in "fedcba":
        (run / name).write_text("")
    assert refusal(run) == f"runtime.out_dir {run} is not empty (a, b, c, d, e, f); {ways_out}"
    (run / "g").write_text("")
    assert refusal(run) == f"runtime.out_dir {run} is not empty (a, b, c, d, e, f, ...); {ways_out}"
    for resume, overwrite in [(True, False), (False, True)]:
        check_run_directory(run, resume=resume, overwrite=overwrite)  # asked for: no refusal
    (tmp_path / "file").write_text("")
    assert refusal(tmp_path / "file") == f"runtime.out_dir {tmp_path / 'file'} is a file, not a folder"
    check_run_directory(tmp_path / "absent", resume=False, overwrite=False)


def test_stale_temporaries_are_removed_even_if_another_process_removes_one_first(tmp_path, monkeypatch):
    from pathlib import Path

    from ocnet_edu.engine.run_dir import remove_stale_temporaries

    for name in (".a.pt.x1.tmp", ".b.csv.x2.tmp", "kept.tmp", "final.pt"):
        (tmp_path / name).write_text("")
    real = Path.is_file

    def is_file_then_gone(path):  # another rank deletes the file right after it was listed
        found = real(path)
        if path.name == ".a.pt.x1.tmp":
            path.unlink()
        return found

    monkeypatch.setattr(Path, "is_file", is_file_then_gone)
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".a.pt.x1.tmp", ".b.csv.x2.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.pt", "kept.tmp"]
    assert remove_stale_temporaries(tmp_path / "absent") == []


def test_record_loss_sums_counts_and_keeps_the_first_non_finite_iteration_as_int64_on_the_losss_device():
    from types import SimpleNamespace

    from ocnet_edu.engine.train import _record_loss

    state = SimpleNamespace(loss_sum=None, loss_steps=0, first_nonfinite=None, iteration=0)
    for value in (1.5, 2.5, float("nan"), float("inf"), 3.0):
        _record_loss(state, torch.tensor(value, dtype=torch.float64, requires_grad=True))
        state.iteration += 1
    assert state.loss_steps == 5 and math.isnan(state.loss_sum.item()) and state.loss_sum.dtype == torch.float32
    assert state.first_nonfinite.dtype == torch.int64 and state.first_nonfinite.item() == 3  # 1-based, as logged
    assert not state.loss_sum.requires_grad
    # on another device (meta stands in for a GPU): nothing is made on the CPU
    from helpers import CPUTensorCreations

    state = SimpleNamespace(loss_sum=None, loss_steps=0, first_nonfinite=None, iteration=0)
    loss = torch.tensor(1.0, device="meta")
    with CPUTensorCreations() as created:
        _record_loss(state, loss)
    assert created.ops == [] and state.first_nonfinite.device.type == "meta" and state.loss_sum.device.type == "meta"


def test_the_content_checksum_is_the_sha256_of_the_documented_stream_of_keys_types_and_bytes():
    """The checksum is part of the file format (a file saved today must verify tomorrow), so its
    stream is written out here: each entry ``<key>:<kind>...;`` in sorted key order (by type name, then
    repr), a tensor's dtype, shape and little-endian bytes, the stored checksum left out."""
    import hashlib

    from ocnet_edu.engine.checkpoint import content_checksum

    tensor = torch.tensor([[1, 2], [3, 4]], dtype=torch.int16).t()  # not contiguous: hashed in its own order
    obj = {"b": tensor, "a": [1.5, "x", (None,)], 3: {"k": True}, "checksum": "not hashed", "e": torch.zeros(0),
           "c": "y", "d": "x"}  # (sorted by key, not by value: c before d)
    stream = b"".join([
        b":dict:6;",
        b"/3:dict:1;", b"/3/'k':bool:True;",
        b"/'a':seq:3;", b"/'a'/0:float:1.5;", b"/'a'/1:str:'x';", b"/'a'/2:seq:1;", b"/'a'/2/0:NoneType:None;",
        b"/'b':tensor:torch.int16:(2, 2);", bytes([1, 0, 3, 0, 2, 0, 4, 0]),
        b"/'c':str:'y';", b"/'d':str:'x';",
        b"/'e':tensor:torch.float32:(0,);",
    ])
    assert content_checksum(obj) == "sha256:" + hashlib.sha256(stream).hexdigest()
    assert content_checksum({**obj, "checksum": "another"}) == content_checksum(obj)
    same_values = {**obj, "b": tensor.contiguous().double().short()}  # same dtype, shape and values
    assert content_checksum(same_values) == content_checksum(obj)
    for changed in ({**obj, "b": tensor.int()}, {**obj, "b": tensor.reshape(1, 4)}, {**obj, "a": [1.5, "x"]},
                    {**obj, 3: {"k": 1}}):
        assert content_checksum(changed) != content_checksum(obj)


def test_atomic_save_adds_the_checksum_and_load_checks_and_removes_it_naming_the_file(tmp_path):
    from ocnet_edu.engine import checkpoint as ckpt

    obj = {"weights": torch.arange(6.0).reshape(2, 3), "iteration": 7}
    path = ckpt.atomic_save(obj, str(tmp_path / "c.pt"))
    assert path == tmp_path / "c.pt" and set(obj) == {"weights", "iteration"}  # the caller's dict is left alone
    raw = torch.load(path, weights_only=True)
    assert raw["checksum"] == ckpt.content_checksum(obj)
    loaded = ckpt.load(path)
    assert set(loaded) == {"weights", "iteration"} and torch.equal(loaded["weights"], obj["weights"])
    raw["iteration"] = 8  # a changed value under the old checksum
    torch.save(raw, tmp_path / "changed.pt")
    actual = ckpt.content_checksum({"weights": obj["weights"], "iteration": 8})
    with pytest.raises(ckpt.CheckpointError) as error:
        ckpt.load(tmp_path / "changed.pt")
    assert str(error.value) == (
        f"the checkpoint {tmp_path / 'changed.pt'} is corrupted: its content checksum is {actual[:23]}..., but it was "
        f"saved with {raw['checksum'][:23]}...; the file changed after it was written (disk or copy error). Use "
        "another copy, or an earlier checkpoint")
    torch.save({"iteration": 1}, tmp_path / "old.pt")  # no checksum (an older file): loaded as it is
    assert ckpt.load(tmp_path / "old.pt") == {"iteration": 1}
    with pytest.raises(FileNotFoundError) as missing:
        ckpt.load(tmp_path / "absent.pt")
    assert str(missing.value) == f"no checkpoint at {tmp_path / 'absent.pt'}"
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match=rf"^could not read the checkpoint {tmp_path / 'text.pt'}: ") as bad:
        ckpt.load(tmp_path / "text.pt")
    assert bad.value.__cause__ is not None
    mapped = []  # map_location is handed to torch.load
    ckpt.load(path, map_location=lambda storage, location: mapped.append(location) or storage)
    assert mapped == ["cpu"]


def test_the_builders_take_every_value_from_the_config():
    from ocnet_edu.config import load_config
    from ocnet_edu.engine.builders import build_model, build_optimizer, build_scheduler, loss_options
    from ocnet_edu.losses import poly_lr_factor

    cfg = load_config("configs/synthetic.yaml", [
        "optim.lr=0.02", "optim.momentum=0.8", "optim.weight_decay=0.001", "optim.poly_power=2.0",
        "schedule.max_iters=10", "loss.aux_weight=0.25", "model.dropout=0.2", "model.context=base_oc_sa",
        "model.context_options={channels: 24}", "loss.ohem=true", "loss.ohem_thresh=0.6", "loss.ohem_min_kept=11",
        "loss.class_weights=[1.0, 2.0, 0.5, 1.0, 3.0]"])
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.num_classes == cfg.model.num_classes and model.aux_weight == 0.25 and model.aux_head is not None
    assert any(isinstance(m, torch.nn.Dropout2d) and m.p == 0.2 for m in model.modules())
    from ocnet_edu.heads import BaseOC

    assert isinstance(model.context, BaseOC) and model.context.reduce[0].out_channels == 24  # context and options
    assert model.context.reduce[0].in_channels == model.backbone.out_channels  # fed by the backbone
    assert build_model(load_config("configs/synthetic.yaml", ["loss.aux_weight=0"])).aux_head is None
    assert build_model(load_config("configs/synthetic.yaml", ["model.backbone_options={width: 8}"])).backbone.out_channels == 64
    with pytest.raises(ValueError, match="^the small CPU backbone has no pretrained weights$"):  # handed to the backbone
        build_model(load_config("configs/synthetic.yaml", ["model.pretrained=/nowhere.pt"]))
    optimizer = build_optimizer(cfg, model)
    (group,) = optimizer.param_groups
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.02, 0.8, 0.001)
    assert [id(p) for p in group["params"]] == [id(p) for p in model.parameters()]
    scheduler = build_scheduler(cfg, optimizer)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.02 * poly_lr_factor(t, 10, 2.0) for t in range(10)], rel=1e-12)
    assert rates[1] == pytest.approx(0.02 * 0.9**2)  # power 2, not the default 0.9
    options = loss_options(cfg)
    assert set(options) == {"ohem", "ohem_thresh", "ohem_min_kept", "class_weights"}
    assert (options["ohem"], options["ohem_thresh"], options["ohem_min_kept"]) == (True, 0.6, 11)
    weights = options["class_weights"]
    assert weights.dtype == torch.float32 and torch.equal(weights, torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0]))
    assert loss_options(cfg, "meta")["class_weights"].device.type == "meta"
    default = torch.get_default_dtype()
    try:  # float32 whatever the default dtype (the loss casts its logits to float32)
        torch.set_default_dtype(torch.float64)
        assert loss_options(cfg)["class_weights"].dtype == torch.float32
    finally:
        torch.set_default_dtype(default)
    assert loss_options(load_config("configs/synthetic.yaml"))["class_weights"] is None


def test_fsync_folder_flushes_the_folder_it_opened_read_only_closes_it_and_never_raises(tmp_path, monkeypatch):
    import os

    from ocnet_edu.engine import run_dir

    calls = []
    real_open, real_close = os.open, os.close
    monkeypatch.setattr(run_dir.os, "open", lambda path, flags: calls.append(("open", path, flags)) or real_open(path, flags))
    monkeypatch.setattr(run_dir.os, "fsync", lambda fd: calls.append(("fsync", fd)))
    monkeypatch.setattr(run_dir.os, "close", lambda fd: calls.append(("close", fd)) or real_close(fd))
    run_dir._fsync_folder(tmp_path)
    (_, path, flags), (_, synced), (_, closed) = calls
    assert [c[0] for c in calls] == ["open", "fsync", "close"] and path == tmp_path and flags == os.O_RDONLY
    assert synced == closed

    def failing(fd):
        calls.append(("fsync", fd))
        raise OSError("not supported on this file system")

    calls.clear()
    monkeypatch.setattr(run_dir.os, "fsync", failing)
    run_dir._fsync_folder(tmp_path)  # best effort: no error, and the descriptor is still closed
    assert [c[0] for c in calls] == ["open", "fsync", "close"]
    calls.clear()
    run_dir._fsync_folder(tmp_path / "absent")  # cannot be opened: nothing else is tried
    assert [c[0] for c in calls] == ["open"]


class _Pickled:
    """An arbitrary Python object: what ``weights_only=True`` refuses to unpickle."""


def test_a_checkpoint_holding_python_objects_is_refused_unread_since_it_could_run_code(tmp_path):
    from ocnet_edu.engine import checkpoint as ckpt

    torch.save({"iteration": 1, "payload": _Pickled()}, tmp_path / "code.pt")
    with pytest.raises(ckpt.CheckpointError, match=rf"^could not read the checkpoint {tmp_path / 'code.pt'}: .*[Ww]eights only"):
        ckpt.load(tmp_path / "code.pt")
