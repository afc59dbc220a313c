"""Reliability of several processes: a frozen rank makes the others stop within
``runtime.dist_timeout`` with a message naming the ranks, instead of waiting forever."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from helpers import stand_in_group
from ocnet_edu.engine import distributed

ROOT = Path(__file__).resolve().parents[1]

ONE_RANK_SLEEPS = textwrap.dedent("""
    import sys, time
    import torch
    from ocnet_edu.engine import distributed

    ctx = distributed.setup("cpu", timeout_minutes=float(sys.argv[1]))
    if ctx.rank == 1:
        time.sleep(60)  # frozen, as far as rank 0 can tell
    if sys.argv[2] == "barrier":
        distributed.barrier()
    else:
        distributed.all_reduce_mean(torch.ones(3))
""")


@pytest.mark.slow
@pytest.mark.parametrize(("operation", "port"), [("barrier", 29541), ("all_reduce", 29542)])
def test_a_frozen_rank_stops_the_others_within_the_timeout(tmp_path, operation, port):
    script = tmp_path / "frozen.py"
    script.write_text(ONE_RANK_SLEEPS)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
         str(script), "0.05", operation],  # 3 seconds
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    elapsed = time.perf_counter() - start
    assert done.returncode != 0 and elapsed < 50, (elapsed, done.stderr[-2000:])
    assert "DistributedError: rank 0 of 2:" in done.stderr
    assert "rank 1 stopped answering" in done.stderr or "rank(s) 1 stopped answering" in done.stderr
    assert "runtime.dist_timeout = 0.05 min" in done.stderr


LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "MASTER_ADDR")


@pytest.fixture
def launch(monkeypatch):
    """A clean launch environment, a stand-in for ``init_process_group`` (recording its calls) and
    ``fake_cuda()``, which makes the process see CUDA (recording ``set_device``)."""
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    calls = []
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, timeout: calls.append(("init", backend, timeout)))
    monkeypatch.setattr(distributed, "_timeout_minutes", distributed.DEFAULT_TIMEOUT_MINUTES)

    def fake_cuda():
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append(("set_device", index)))

    return calls, fake_cuda


def test_setup_passes_the_timeout_to_the_process_group(launch, monkeypatch):
    calls, _ = launch
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    ctx = distributed.setup("cpu", timeout_minutes=0.5)
    assert calls == [("init", "gloo", timedelta(seconds=30))]
    assert (ctx.rank, ctx.world_size) == (1, 2)
    with pytest.raises(ValueError, match="runtime.dist_timeout"):
        distributed.setup("cpu", timeout_minutes=0)


def test_train_uses_runtime_dist_timeout(monkeypatch, tmp_path):
    from ocnet_edu.config import load_config
    from ocnet_edu.engine import train as train_module

    seen = {}

    def fake_setup(device, timeout_minutes):
        seen["timeout"] = timeout_minutes
        raise RuntimeError("stop here")

    monkeypatch.setattr(train_module.distributed, "setup", fake_setup)
    cfg = load_config(ROOT / "configs" / "synthetic.yaml", ["runtime.dist_timeout=2.5", f"runtime.out_dir={tmp_path}"])
    with pytest.raises(RuntimeError, match="stop here"):
        train_module.train(cfg, progress=False)
    assert seen == {"timeout": 2.5}


def test_communication_failures_name_rank_world_size_and_key(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(distributed.DistributedError, match=r"rank 2 of 4: training failed: another process.*runtime.dist_timeout"):
        with distributed.explain_failures("training"):
            raise RuntimeError("[gloo] Timed out waiting 3000ms for recv operation to complete")
    with pytest.raises(RuntimeError, match="^size mismatch$"):  # other errors pass through unchanged
        with distributed.explain_failures("training"):
            raise RuntimeError("size mismatch")


def test_setup_alone_is_rank_0_of_1_on_the_cpu_without_a_group(launch):
    calls, _ = launch
    for args in [("auto",), ("cpu",), ()]:  # "auto" is the default
        assert distributed.setup(*args) == distributed.DistributedContext(0, 1, 0, torch.device("cpu"))
    assert calls == [] and distributed._timeout_minutes == distributed.DEFAULT_TIMEOUT_MINUTES


def test_setup_on_cuda_takes_the_local_ranks_device_and_nccl(launch, monkeypatch):
    calls, fake_cuda = launch
    fake_cuda()
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed.setup().device == torch.device("cuda", 3) and calls == [("set_device", 3)]  # auto: CUDA
    calls.clear()
    assert distributed.setup("cpu").device == torch.device("cpu") and calls == []  # CUDA present, CPU asked for
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    ctx = distributed.setup("cuda", timeout_minutes=2)
    assert ctx == distributed.DistributedContext(2, 4, 3, torch.device("cuda", 3))
    assert calls == [("set_device", 3), ("init", "nccl", timedelta(minutes=2))]
    assert distributed._timeout_minutes == 2.0 and isinstance(distributed._timeout_minutes, float)


@pytest.mark.parametrize("variables, joins", [({"TORCHELASTIC_RUN_ID": "x", "MASTER_ADDR": "127.0.0.1"}, True),
                                              ({"TORCHELASTIC_RUN_ID": "x"}, False), ({"MASTER_ADDR": "127.0.0.1"}, False)])
def test_setup_joins_a_group_of_one_only_when_torchrun_launched_it(launch, monkeypatch, variables, joins):
    calls, _ = launch
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert distributed._launched_by_torchrun() is joins
    distributed.setup("cpu", timeout_minutes=1.5)
    assert calls == ([("init", "gloo", timedelta(minutes=1.5))] if joins else [])


def test_setup_does_not_join_twice(launch, monkeypatch):
    calls, _ = launch
    monkeypatch.setenv("WORLD_SIZE", "2")
    stand_in_group(monkeypatch, 1, 2)
    assert distributed.setup("cpu", timeout_minutes=5) == distributed.DistributedContext(1, 2, 0, torch.device("cpu"))
    assert calls == [] and distributed._timeout_minutes == distributed.DEFAULT_TIMEOUT_MINUTES


def test_setup_refuses_a_bad_device_or_timeout_and_absent_cuda_naming_them(launch, monkeypatch):
    calls, _ = launch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for timeout in (0, -1.0, float("nan")):
        with pytest.raises(ValueError) as error:
            distributed.setup("cpu", timeout_minutes=timeout)
        assert str(error.value) == f"runtime.dist_timeout must be > 0 minutes, got {timeout}"
    with pytest.raises(ValueError) as error:
        distributed.setup("gpu")
    assert str(error.value) == "device must be 'auto', 'cpu' or 'cuda', got 'gpu'"
    with pytest.raises(RuntimeError) as error:
        distributed.setup("cuda")
    assert str(error.value) == "device='cuda' was requested but CUDA is not available"
    assert calls == []


def test_a_peer_that_never_joins_is_reported_as_a_failure_to_join_the_process_group(launch, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")

    def refused(backend, timeout):
        raise RuntimeError("Connection reset by peer")

    monkeypatch.setattr(distributed.dist, "init_process_group", refused)
    with pytest.raises(distributed.DistributedError,
                       match=r"^rank 0 of 2: joining the process group failed: rank 1 stopped answering or exited"):
        distributed.setup("cpu")
