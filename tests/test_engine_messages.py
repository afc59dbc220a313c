"""What the engine tells a user when something fails: the exact messages of a distributed failure and
of a failed write, the table of raw label ids, the per-rank seeds, and the mean over ranks (with
stand-ins for the process group, so that one process can check what several would do)."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import stand_in_group
from ocnet_edu.engine import distributed
from ocnet_edu.engine.distributed import DistributedError, _stopped_answering, all_reduce_mean
from ocnet_edu.engine.predict import train_to_raw_ids
from ocnet_edu.engine.run_dir import write_error
from ocnet_edu.engine.train import rank_seed


def _world(monkeypatch, rank: int, size: int) -> None:
    """torchrun's environment of one process, without a process group."""
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(size))


def _tail(error: BaseException) -> str:
    return (f" (frozen, killed, or slower than runtime.dist_timeout = {distributed._timeout_minutes:g} min; raise "
            f"that key if a step legitimately takes longer). {type(error).__name__}: {str(error).strip()[:500]}")


@pytest.mark.parametrize("report, who", [("Ranks 1, 3 failed to pass monitoredBarrier in 60000 ms", "rank(s) 1, 3"),
                                         ("Rank 2 failed to pass monitoredBarrier in 60000 ms", "rank(s) 2")])
def test_a_failed_collective_names_the_ranks_gloo_reports(monkeypatch, report, who):
    _world(monkeypatch, 0, 4)
    error = RuntimeError(f"[../gloo.cpp:42] {report}")
    assert str(_stopped_answering("all_reduce", error)) == f"rank 0 of 4: all_reduce failed: {who} stopped answering" + _tail(error)


def test_without_a_report_the_other_rank_of_two_is_named(monkeypatch):
    _world(monkeypatch, 1, 2)
    error = TimeoutError("  socket timed out  ")
    assert str(_stopped_answering("barrier", error)) == (
        "rank 1 of 2: barrier failed: rank 0 stopped answering or exited" + _tail(error))
    assert _tail(error).endswith("TimeoutError: socket timed out")


def test_with_more_ranks_and_no_report_another_process_is_blamed(monkeypatch):
    _world(monkeypatch, 0, 3)
    error = RuntimeError("Connection closed by peer " + "x" * 600)  # a long message is cut at 500 characters
    message = str(_stopped_answering("broadcast", error))
    assert message == "rank 0 of 3: broadcast failed: another process stopped answering or exited" + _tail(error)
    assert message.endswith("RuntimeError: " + str(error)[:500])


def test_all_reduce_mean_divides_the_sum_by_the_world_and_leaves_its_input_alone(monkeypatch):
    """A stand-in group of three ranks holding the same value: the sum is three times it."""
    stand_in_group(monkeypatch, 0, 3)
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda tensor, *args, **kwargs: tensor.mul_(3))
    value = torch.tensor([1.5, -2.0], requires_grad=True)
    mean = all_reduce_mean(value)
    assert torch.equal(mean, torch.tensor([1.5, -2.0])) and not mean.requires_grad
    assert torch.equal(value.detach(), torch.tensor([1.5, -2.0]))

    def closed(tensor, *args, **kwargs):
        raise RuntimeError("Connection closed by peer")

    monkeypatch.setattr(distributed.dist, "all_reduce", closed)
    with pytest.raises(DistributedError, match=r"^rank 0 of 3: all_reduce \(mean\) failed: "):
        all_reduce_mean(value)


def test_rank_seeds_are_pinned():
    """Rank 0 keeps the configured seed; rank r adds r times a large prime. The values are part of
    what makes a multi-process run reproducible (and resumable): they must not change."""
    assert [rank_seed(7, r) for r in range(4)] == [7, 1_000_010, 2_000_013, 3_000_016]
    assert len({rank_seed(s, r) for s in range(100) for r in range(8)}) == 800


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), OSError(errno.EDQUOT, "Quota"),
                                   RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0"),
                                   RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
                                   OSError("Disk quota exceeded"), RuntimeError("NO SPACE LEFT on the device")])
def test_a_full_disk_is_named_as_such(error):
    path = Path("/runs/a/last.pt")
    assert str(write_error(path, error, "checkpoint")) == (
        f"could not write the checkpoint {path}: no space left on device (free some space in /runs/a, or set "
        f"runtime.out_dir elsewhere); the previous version of the file, if any, is intact ({type(error).__name__}: {error})")


@pytest.mark.parametrize("error", [PermissionError(errno.EACCES, "Permission denied"), RuntimeError("boom")])
def test_other_write_errors_are_passed_on_with_the_file(error):
    assert str(write_error(Path("/runs/a/log.jsonl"), error)) == (
        f"could not write the file /runs/a/log.jsonl ({type(error).__name__}: {error})")


def test_raw_label_ids_invert_the_look_up_table_and_name_a_missing_class():
    assert train_to_raw_ids(object(), 3).tolist() == [0, 1, 2]  # no table: train ids are stored
    assert train_to_raw_ids(object(), 3).dtype == np.uint8
    tiny = type("Tiny", (), {"lut": np.array([255, 0, 1, 0, 255])})()  # raw 1 and 3 → 0, raw 2 → 1
    table = train_to_raw_ids(tiny, 2)
    assert table.tolist() == [1, 2] and table.dtype == np.uint8
    with pytest.raises(ValueError, match="^Tiny has no raw label id for train id 2$"):
        train_to_raw_ids(tiny, 3)


def test_clearing_a_run_directory_removes_the_run_files_and_folders_only(tmp_path):
    from ocnet_edu.engine.run_dir import RUN_FILES, clear_run_directory

    (tmp_path / "tensorboard" / "events").mkdir(parents=True)
    (tmp_path / "tensorboard" / "events" / "e.out").write_text("x")
    for name in ("config.yaml", "final.pt", "mine.txt"):
        (tmp_path / name).write_text("x")
    clear_run_directory(tmp_path)
    assert "tensorboard" in RUN_FILES and sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_compiling_with_sync_batch_norm_warns_with_the_count_and_the_caller():
    from ocnet_edu.engine.train import _warn_compile_sync_bn

    model = torch.nn.Sequential(torch.nn.SyncBatchNorm(4), torch.nn.Conv2d(4, 4, 1), torch.nn.SyncBatchNorm(4))
    with pytest.warns(RuntimeWarning) as caught:
        _warn_compile_sync_bn(model)
    assert str(caught[0].message) == (
        "runtime.compile=true with SyncBatchNorm: torch.compile breaks its graph at each of the 2 SyncBatchNorm layers, "
        "which costs much of its gain; consider runtime.compile=false when training on several GPUs")
    assert Path(caught[0].filename).name != "train.py"  # attributed to the caller (stacklevel 2), not to itself


def test_all_gather_object_collects_one_object_per_rank_in_order(monkeypatch):
    from ocnet_edu.engine.distributed import all_gather_object

    assert all_gather_object({"a": 1}) == [{"a": 1}]  # one process: no group
    stand_in_group(monkeypatch, 1, 3)

    def gather(into, obj):  # a stand-in group of three ranks, this one being rank 1
        into[:] = [f"{obj} from 0", obj, f"{obj} from 2"]

    monkeypatch.setattr(distributed.dist, "all_gather_object", gather)
    assert all_gather_object("x") == ["x from 0", "x", "x from 2"]

    def lost(into, obj):
        raise RuntimeError("Connection reset by peer")

    monkeypatch.setattr(distributed.dist, "all_gather_object", lost)
    with pytest.raises(DistributedError, match=r"^rank 1 of 3: all_gather_object failed: "):
        all_gather_object("x")


def test_rank_and_world_size_come_from_the_group_else_from_torchrun_else_alone(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    _world(monkeypatch, 3, 5)
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (3, 5, False)
    stand_in_group(monkeypatch, 2, 7)  # a group, once up, is what counts
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (2, 7, False)
    stand_in_group(monkeypatch, 0, 7)
    assert distributed.is_main()


def test_a_barrier_is_gloos_monitored_barrier_within_the_timeout_and_nccls_plain_one(monkeypatch):
    from datetime import timedelta

    monkeypatch.setattr(distributed, "_timeout_minutes", 0.5)
    calls = stand_in_group(monkeypatch, 1, 2, "gloo")
    distributed.barrier()
    assert calls == [("monitored_barrier", {"timeout": timedelta(seconds=30), "wait_all_ranks": True})]
    calls = stand_in_group(monkeypatch, 1, 2, "nccl")
    distributed.barrier()
    assert calls == [("barrier", (), {})]

    def missing(**kw):
        raise RuntimeError("Rank 0 failed to pass monitoredBarrier in 30000 ms")

    stand_in_group(monkeypatch, 1, 2, "gloo")
    monkeypatch.setattr(distributed.dist, "monitored_barrier", missing)
    with pytest.raises(DistributedError, match=r"^rank 1 of 2: a barrier failed: rank\(s\) 0 stopped answering"):
        distributed.barrier()
    monkeypatch.setattr(distributed, "_initialized", lambda: False)  # alone: nothing to wait for
    distributed.barrier()


def test_all_reduce_sum_sums_in_place_over_the_given_group_and_names_itself_on_failure(monkeypatch):
    seen = []
    stand_in_group(monkeypatch, 0, 2)

    def all_reduce(tensor, op=None, group=None):
        seen.append((op, group))
        tensor.mul_(2)

    monkeypatch.setattr(distributed.dist, "all_reduce", all_reduce)
    value = torch.tensor([1.0, 2.5])
    distributed.all_reduce_sum(value, group="the group")
    distributed.all_reduce_sum(value)
    assert torch.equal(value, torch.tensor([4.0, 10.0]))
    assert seen == [(distributed.dist.ReduceOp.SUM, "the group"), (distributed.dist.ReduceOp.SUM, None)]

    def closed(tensor, op=None, group=None):
        raise RuntimeError("Connection closed by peer")

    monkeypatch.setattr(distributed.dist, "all_reduce", closed)
    with pytest.raises(DistributedError, match=r"^rank 0 of 2: all_reduce \(sum\) failed: rank 1 stopped answering"):
        distributed.all_reduce_sum(value)
    monkeypatch.setattr(distributed, "_initialized", lambda: False)  # alone: the tensor is its own sum
    distributed.all_reduce_sum(value)
    assert torch.equal(value, torch.tensor([4.0, 10.0]))
