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


def test_setup_passes_the_timeout_to_the_process_group(monkeypatch):
    seen = {}

    def fake_init(backend, timeout):
        seen.update(backend=backend, timeout=timeout)

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(distributed.dist, "init_process_group", fake_init)
    ctx = distributed.setup("cpu", timeout_minutes=0.5)
    assert seen == {"backend": "gloo", "timeout": timedelta(seconds=30)}
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
