"""The GPU training stack, checked where a CPU can show it (issue 16; the rest is `make gpu-check`).

Each test names the failure it guards against: resuming onto another device, a non-finite loss
on one rank only, resuming float16 from a run without a scaler, identical dropout on every rank,
backend flags, torch.compile with SyncBatchNorm, host syncs per step, bfloat16 on GPUs that only
emulate it, and a DataLoader rebuilt every epoch. Two-process tests run gloo in spawned processes.
"""

from __future__ import annotations

import json
import math
import os
import socket
import traceback
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ocnet_edu.config import load_config
from ocnet_edu.engine import checkpoint as ckpt
from ocnet_edu.engine import distributed, loader
from ocnet_edu.engine.builders import build_train_dataset
from ocnet_edu.engine.loader import EpochBatchSampler, epoch_batches, train_loader
from ocnet_edu.engine.train import (_amp_dtype, backend_flags, parallelize, read_loss, resume_from, save_checkpoint,
                                    setup, train, train_step)

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = ROOT / "configs" / "synthetic.yaml"
CPU = distributed.DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ("model.backbone_options={width: 8, blocks: [1, 1, 1]}", "model.context_options={channels: 16, groups: [2, 2]}",
        "data.crop_size=[32,32]", "data.synthetic_size=[32,32]", "data.synthetic_length=8", "schedule.batch_size=2",
        "schedule.checkpoint_every=100", "runtime.workers=0")


def tiny_config(out_dir, *overrides):
    """A synthetic config small enough for several processes on two shared cores."""
    return load_config(SYNTHETIC, [f"runtime.out_dir={out_dir}", *TINY, *overrides])


def batch(cfg, seed=0):
    """A random batch of the config's crop size: images ``[2, 3, H, W]``, labels ``[2, H, W]``."""
    generator = torch.Generator().manual_seed(seed)
    height, width = cfg.data.crop_size
    return (torch.randn(2, 3, height, width, generator=generator),
            torch.randint(0, cfg.model.num_classes, (2, height, width), generator=generator))


def read_rows(run_dir):
    return pd.read_csv(Path(run_dir) / "metrics.csv")


# ---------------------------------------------------------------- item 1: resume onto any device
def test_resume_reads_the_checkpoint_onto_the_cpu_whatever_the_device(tmp_path):
    """On CUDA, loading with ``map_location=device`` put the saved RNG states on the GPU and
    ``torch.set_rng_state`` failed; ``meta`` stands in for a device that is not the CPU."""
    cfg = tiny_config(tmp_path, "model.dropout=0.1")
    state = setup(cfg, CPU)
    train_step(state, *batch(cfg))
    save_checkpoint(state, tmp_path / "checkpoint.pt")
    saved = ckpt.load(tmp_path / "checkpoint.pt")
    fresh = setup(cfg, CPU)
    elsewhere = distributed.DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("meta"))
    assert resume_from(fresh, tmp_path / "checkpoint.pt", elsewhere)
    assert fresh.iteration == 1
    assert torch.equal(torch.get_rng_state(), saved["rng"][0]["torch"])
    for key, value in fresh.model.state_dict().items():
        assert torch.equal(value, saved["model"][key]), key


# ---------------------------------------------------------------- item 4: float16 after bfloat16/float32
def test_resuming_with_float16_from_a_run_without_scaler_starts_a_fresh_scaler(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    state = setup(cfg, CPU)
    assert not state.scaler.is_enabled()
    save_checkpoint(state, tmp_path / "checkpoint.pt")
    assert ckpt.load(tmp_path / "checkpoint.pt")["scaler"] == {}
    resumed = setup(cfg, CPU)
    resumed.scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0**16)  # what float16 on a GPU builds
    assert resume_from(resumed, tmp_path / "checkpoint.pt", CPU)
    assert resumed.scaler.is_enabled() and resumed.scaler.get_scale() == 2.0**16
    assert "runtime.amp_dtype=float16 starts a fresh scaler" in capsys.readouterr().out
    # a saved scaler state still loads
    resumed.scaler.scale(torch.ones(()))  # the scale tensor is created lazily
    resumed.scaler.update(new_scale=512.0)
    save_checkpoint(resumed, tmp_path / "scaled.pt")
    again = setup(cfg, CPU)
    again.scaler = torch.amp.GradScaler("cpu", enabled=True)
    resume_from(again, tmp_path / "scaled.pt", CPU)
    assert again.scaler.get_scale() == 512.0


# ---------------------------------------------------------------- two gloo processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, task: str, out_dir: str) -> None:
    """Rank ``rank`` of 2 gloo processes: run ``task`` and write ``<out_dir>/rank<r>.json``."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    try:
        result = TASKS[task](rank, Path(out_dir))
    except Exception as error:  # noqa: BLE001 - reported to the parent
        result = {"error": type(error).__name__, "message": str(error), "trace": traceback.format_exc()}
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(result))


def _nan_on_rank_one(rank: int, out_dir: Path) -> dict:
    """Train where rank 1's second loss is NaN (rank 0's losses all finite)."""
    from ocnet_edu.model import OCNet

    original, calls = OCNet.loss, []

    def loss(self, *args, **kwargs):
        value = original(self, *args, **kwargs)
        calls.append(1)
        return value * float("nan") if rank == 1 and len(calls) == 2 else value

    OCNet.loss = loss
    train(tiny_config(out_dir / "run", "schedule.max_iters=6"), progress=False)
    return {"error": None}


def _initial_weights_and_dropout(rank: int, out_dir: Path) -> dict:
    """After :func:`setup`: a checksum of the initial weights and a Dropout2d mask, gathered."""
    ctx = distributed.setup("cpu")
    try:
        state = setup(tiny_config(out_dir / "run"), ctx)
        weights = torch.cat([p.detach().flatten() for p in state.model.parameters()])
        mask = F.dropout2d(torch.ones(1, 64, 1, 1), 0.5, training=True).flatten().tolist()
        gathered = distributed.all_gather_object({"weights": weights.double().sum().item(),
                                                  "first": weights[:50].tolist(), "mask": mask})
    finally:
        distributed.cleanup()
    return {"gathered": gathered}


TASKS = {"nan": _nan_on_rank_one, "dropout": _initial_weights_and_dropout}


def run_two_ranks(task: str, tmp_path: Path, timeout: float = 240.0) -> list[dict]:
    """Run ``task`` on 2 spawned gloo processes; both must finish within ``timeout`` seconds."""
    port, context = _free_port(), mp.get_context("spawn")
    processes = [context.Process(target=_worker, args=(rank, port, task, str(tmp_path))) for rank in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout)
    alive = [p for p in processes if p.is_alive()]
    for process in alive:
        process.kill()
    assert not alive, f"{len(alive)} process(es) still running after {timeout} s (blocked in a collective?)"
    return [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]


@pytest.mark.slow
def test_a_nonfinite_loss_on_one_rank_stops_every_rank(tmp_path):
    """Before: rank 1 raised alone, and rank 0 waited in the next all-reduce until the timeout."""
    results = run_two_ranks("nan", tmp_path)
    for rank, result in enumerate(results):
        assert result["error"] == "FloatingPointError", (rank, result.get("trace"))
        assert "process 1 at iteration 2" in result["message"] and "1 of 2" in result["message"]
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # no state with NaN weights was saved


@pytest.mark.slow
def test_ranks_start_from_the_same_weights_but_draw_different_dropout(tmp_path):
    results = run_two_ranks("dropout", tmp_path)
    assert all("gathered" in r for r in results), results
    rank0, rank1 = results[0]["gathered"]
    assert rank0["weights"] == rank1["weights"] and rank0["first"] == rank1["first"]
    assert rank0["mask"] != rank1["mask"]
    # rank 0 keeps the stream of a single process (single-process runs are unchanged)
    setup(tiny_config(tmp_path / "single"), CPU)
    assert F.dropout2d(torch.ones(1, 64, 1, 1), 0.5, training=True).flatten().tolist() == rank0["mask"]


def test_setup_seeds_every_generator_builds_from_the_config_and_keeps_plain_batch_norm_on_the_cpu(tmp_path):
    """The state at iteration 0: the model of ``build_model`` under ``runtime.seed``; rank r > 0 leaves
    every global generator (Python, NumPy, torch) seeded with ``rank_seed``; no SyncBatchNorm without
    GPUs even in a group; channels_last weights on request; no gradient scaler without float16."""
    import random

    import numpy as np

    from ocnet_edu.engine.builders import build_model
    from ocnet_edu.engine.train import rank_seed

    cfg = tiny_config(tmp_path / "run", "runtime.seed=5", "runtime.channels_last=true", "runtime.amp=true")
    torch.manual_seed(5)
    expected = build_model(cfg).state_dict()
    group_of_two = distributed.DistributedContext(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"))
    state = setup(cfg, group_of_two)
    assert all(torch.equal(value, expected[name]) for name, value in state.model.state_dict().items())
    drawn = (random.random(), np.random.rand(), torch.rand(1).item())
    seed = rank_seed(5, 1)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    assert drawn == (random.random(), np.random.rand(), torch.rand(1).item())
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in state.model.modules())
    weights = [p for p in state.model.parameters() if p.dim() == 4]
    assert state.channels_last and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    assert state.amp_dtype == torch.bfloat16 and state.scaler.is_enabled() is False
    assert state.runner is state.model and state.model_config == ckpt.model_config(cfg)
    assert state.optimizer.param_groups[0]["lr"] == cfg.optim.lr and state.loss_options["ohem"] == cfg.loss.ohem
    plain = setup(tiny_config(tmp_path / "plain"), CPU)
    assert not plain.channels_last and plain.amp_dtype is None and plain.scaler.is_enabled() is False
    assert not all(p.is_contiguous(memory_format=torch.channels_last) for p in plain.model.parameters() if p.dim() == 4)


def test_parallelize_wraps_in_ddp_only_in_a_group_with_the_local_gpu_as_its_device(tmp_path, monkeypatch):
    """DistributedDataParallel (a stand-in here: a real one needs a process group) wraps the bare
    model in a group, naming the local GPU on CUDA and no device on the CPU; the model itself is kept."""
    wrapped = []

    class DDP(nn.Module):
        def __init__(self, module, device_ids=None):
            super().__init__()
            wrapped.append((module, device_ids))

    monkeypatch.setattr(nn.parallel, "DistributedDataParallel", DDP)
    cfg = tiny_config(tmp_path / "run")
    state = setup(cfg, CPU)
    parallelize(state, cfg, CPU)  # alone: the model runs itself
    assert state.runner is state.model and wrapped == []
    for device, ids in [(torch.device("cpu"), None), (torch.device("cuda", 1), [1])]:
        ctx = distributed.DistributedContext(rank=1, world_size=2, local_rank=1, device=device)
        parallelize(state, cfg, ctx)
        assert isinstance(state.runner, DDP) and wrapped[-1] == (state.model, ids)
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(module) or "compiled")
    compiling = tiny_config(tmp_path / "run", "runtime.compile=true")
    parallelize(state, compiling, CPU)  # torch.compile runs the model, or its DDP wrapper in a group
    assert state.runner == "compiled" and compiled == [state.model]
    parallelize(state, compiling, ctx)
    assert state.runner == "compiled" and isinstance(compiled[-1], DDP)


# ---------------------------------------------------------------- items 8, 12: backend flags
@pytest.fixture
def restore_backends():
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    yield saved
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[:2]
    torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def test_backend_flags_benchmark_on_cuda_deterministic_on_request_restored_after(restore_backends):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # the flags are plain settings: no GPU needed
    with backend_flags(cuda, deterministic=False):
        assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    assert (torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled()) == restore_backends[::2]
    with backend_flags(cuda, deterministic=True):
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert torch.are_deterministic_algorithms_enabled()
    with backend_flags(cpu, deterministic=False):
        assert not torch.backends.cudnn.benchmark
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
            torch.are_deterministic_algorithms_enabled()) == restore_backends[:3]


def test_deterministic_training_sets_cublas_workspace_and_matches_on_the_cpu(tmp_path, monkeypatch, restore_backends):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    plain = train(tiny_config(tmp_path / "plain", "schedule.max_iters=3", "model.dropout=0.1"), progress=False)
    strict = train(tiny_config(tmp_path / "strict", "schedule.max_iters=3", "model.dropout=0.1",
                               "runtime.deterministic=true"), progress=False)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert not torch.are_deterministic_algorithms_enabled()  # restored: evaluation is not affected
    assert plain["final_loss"] == strict["final_loss"]  # the CPU kernels are deterministic anyway


# ---------------------------------------------------------------- item 10: compile with SyncBatchNorm
def test_compile_with_sync_batchnorm_warns_naming_runtime_compile(tmp_path):
    cfg = tiny_config(tmp_path, "runtime.compile=true")
    state = setup(cfg, CPU)
    with pytest.warns(RuntimeWarning, match=r"runtime\.compile=true with SyncBatchNorm") as caught:
        state.model = nn.SyncBatchNorm.convert_sync_batchnorm(state.model)  # what several GPUs get
        parallelize(state, cfg, CPU)
    count = sum(isinstance(m, nn.SyncBatchNorm) for m in state.model.modules())
    messages = [str(w.message) for w in caught if "SyncBatchNorm" in str(w.message)]
    assert count > 0 and len(messages) == 1 and f"each of the {count} SyncBatchNorm" in messages[0]
    plain = setup(cfg, CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parallelize(plain, cfg, CPU)  # plain BatchNorm: no warning


# ---------------------------------------------------------------- item 11: no host sync per step
HOST_READS = {"item", "__bool__", "__int__", "__float__", "__index__", "tolist", "numpy", "cpu"}


class HostReads(TorchFunctionMode):
    """Records every tensor method that copies a value to the host (a device sync on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in HOST_READS:
            self.calls.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("amp", ["false", "true"])
def test_train_step_and_ohem_never_read_the_device(tmp_path, amp):
    cfg = tiny_config(tmp_path, "loss.ohem=true", "loss.ohem_min_kept=50", "loss.class_weights=[1,2,2,2,2]",
                      "model.dropout=0.1", f"runtime.amp={amp}", "runtime.amp_dtype=bfloat16")
    state = setup(cfg, CPU)
    with HostReads() as reads:
        for seed in range(3):
            train_step(state, *batch(cfg, seed))
    assert reads.calls == []
    with HostReads() as reads:
        loss = read_loss(state, CPU)
    assert reads.calls == ["tolist"] and loss > 0  # the one read of the loop, every log_every steps


def test_log_every_writes_the_mean_loss_of_the_window_and_still_catches_nan(tmp_path, monkeypatch):
    train(tiny_config(tmp_path / "every", "schedule.max_iters=7"), progress=False)
    train(tiny_config(tmp_path / "third", "schedule.max_iters=7", "runtime.log_every=3"), progress=False)
    every, third = read_rows(tmp_path / "every"), read_rows(tmp_path / "third")
    assert every["iteration"].tolist() == list(range(1, 8))
    assert third["iteration"].tolist() == [3, 6, 7]  # every third step, and the last
    windows = [every["loss"][0:3].mean(), every["loss"][3:6].mean(), every["loss"][6:7].mean()]
    assert third["loss"].tolist() == pytest.approx(windows, abs=2e-6)
    assert third["lr"].tolist() == every["lr"][[2, 5, 6]].tolist()

    from ocnet_edu.model import OCNet

    original, calls = OCNet.loss, []

    def loss(self, *args, **kwargs):
        calls.append(1)
        value = original(self, *args, **kwargs)
        return value * float("inf") if len(calls) == 2 else value

    monkeypatch.setattr(OCNet, "loss", loss)
    with pytest.raises(FloatingPointError, match="process 0 at iteration 2"):
        train(tiny_config(tmp_path / "inf", "schedule.max_iters=6", "runtime.log_every=4"), progress=False)
    assert len(calls) == 4 and not (tmp_path / "inf" / "checkpoint.pt").exists()


# ---------------------------------------------------------------- item 13: bfloat16 only where native
def test_amp_dtype_auto_picks_float16_where_bfloat16_is_only_emulated(monkeypatch, capsys, tmp_path):
    cuda = torch.device("cuda")
    native = {"value": False}  # bfloat16 emulated only (asked about native support, the GPU says no)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: native["value"] if including_emulation is False else True)
    auto = tiny_config(tmp_path, "runtime.amp=true")
    assert auto.runtime.amp_dtype == "auto"  # the default: "not set by the user"
    assert _amp_dtype(auto, cuda) == torch.float16 and capsys.readouterr().out == ""  # said only if asked
    assert _amp_dtype(auto, cuda, announce=True) == torch.float16  # a V100/T4
    assert capsys.readouterr().out == ("runtime.amp_dtype=auto: this GPU has no native bfloat16; using float16 with a "
                                       "gradient scaler\n")
    half = tiny_config(tmp_path, "runtime.amp=true", "runtime.amp_dtype=float16")
    assert _amp_dtype(half, cuda) == torch.float16
    with pytest.raises(ValueError) as error:
        _amp_dtype(half, torch.device("cpu"))
    assert str(error.value) == "float16 autocast needs a GPU; use runtime.amp_dtype=bfloat16 on the CPU"
    native["value"] = True
    assert _amp_dtype(auto, cuda, announce=True) == torch.bfloat16  # A100, H100
    assert _amp_dtype(auto, torch.device("cpu")) == torch.bfloat16
    native["value"] = False
    explicit = tiny_config(tmp_path, "runtime.amp=true", "runtime.amp_dtype=bfloat16")
    assert _amp_dtype(explicit, cuda) == torch.bfloat16  # an explicit choice is kept
    assert _amp_dtype(tiny_config(tmp_path), cuda) is None  # amp off
    with pytest.raises(ValueError, match="runtime.amp_dtype' must be 'auto', 'bfloat16' or 'float16'"):
        tiny_config(tmp_path, "runtime.amp=true", "runtime.amp_dtype=half")  # refused when loaded


# ---------------------------------------------------------------- item 15: one DataLoader per run
def test_epoch_batch_sampler_is_the_per_epoch_order_and_resumes_as_its_tail():
    args = (20, 4, 2, 1, 7)  # samples, batch, world size, rank, seed: 5 steps per epoch
    expected = [[(epoch, i) for i in b] for epoch in range(4) for b in epoch_batches(*args, epoch)]
    assert list(EpochBatchSampler(*args, start=0, stop=17)) == expected[:17]
    for start in (3, 5, 12):
        sampler = EpochBatchSampler(*args, start=start, stop=17)
        assert len(sampler) == 17 - start and list(sampler) == expected[start:17]
    with pytest.raises(ValueError, match="fewer than one batch"):
        EpochBatchSampler(3, 4, 1, 0, 0, 0, 10)


def test_one_loader_per_run_and_workers_see_the_epoch(tmp_path, monkeypatch):
    built = []

    class CountingLoader(torch.utils.data.DataLoader):
        def __init__(self, *args, **kwargs):
            built.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(loader, "DataLoader", CountingLoader)
    train(tiny_config(tmp_path / "run", "schedule.max_iters=9"), progress=False)  # 4 steps/epoch: 3 epochs
    assert len(built) == 1 and built[0]["persistent_workers"] is False
    # two persistent workers deliver exactly the samples of each (epoch, index), across epochs
    cfg = tiny_config(tmp_path / "w")
    dataset = build_train_dataset(cfg)
    stream = train_loader(dataset, 2, 1, 0, seed=0, start=3, stop=10, workers=2)
    assert built[-1]["persistent_workers"] is True
    reference = build_train_dataset(cfg)
    for keys, (images, labels) in zip(EpochBatchSampler(8, 2, 1, 0, 0, 3, 10), stream):
        for (epoch, index), image, label in zip(keys, images, labels):
            reference.set_epoch(epoch)
            want_image, want_label = reference[index]
            assert torch.equal(image, want_image) and torch.equal(label, want_label), (epoch, index)


# ---------------------------------------------------------------- resume: no file, the rank's RNG state, another model
def test_resume_takes_this_ranks_rng_state_or_the_last_one_and_refuses_another_model(tmp_path):
    cfg = tiny_config(tmp_path)
    state = setup(cfg, CPU)
    assert not resume_from(state, tmp_path / "missing.pt", CPU) and state.iteration == 0
    save_checkpoint(state, tmp_path / "checkpoint.pt")
    saved = ckpt.load(tmp_path / "checkpoint.pt")
    other = dict(saved["rng"][0], torch=torch.Generator().manual_seed(123).get_state())
    saved["rng"] = [saved["rng"][0], other]  # as two ranks wrote it
    torch.save(saved, tmp_path / "two.pt")
    for rank, expected in ((1, other["torch"]), (5, other["torch"]), (0, saved["rng"][0]["torch"])):
        ctx = distributed.DistributedContext(rank=rank, world_size=8, local_rank=rank, device=torch.device("cpu"))
        assert resume_from(setup(cfg, CPU), tmp_path / "two.pt", ctx)
        assert torch.equal(torch.get_rng_state(), expected), rank
    wider = setup(tiny_config(tmp_path, "model.num_classes=7"), CPU)
    with pytest.raises(ckpt.CheckpointError, match=rf"^the checkpoint {tmp_path / 'two.pt'} was trained with another"):
        resume_from(wider, tmp_path / "two.pt", CPU)


# ---------------------------------------------------------------- a run's summary and its messages
@pytest.mark.parametrize("deterministic", [True, False])
def test_train_hands_its_options_to_the_run_under_the_backend_flags_and_names_training_when_a_peer_is_lost(
        tmp_path, monkeypatch, deterministic):
    """``train`` itself, around a stand-in for the run: the arguments it passes on (``progress`` on by
    default), the deterministic flag of the config in force during the run (and off after it), and a
    lost peer reported as a failure of "training"."""
    from ocnet_edu.engine import train as train_module

    seen = []

    def run(cfg, ctx, resume, progress, stop_after):
        seen.append((ctx.rank, resume, progress, stop_after, torch.are_deterministic_algorithms_enabled()))
        return {"ran": True}

    monkeypatch.setattr(train_module, "_run", run)
    cfg = tiny_config(tmp_path / "run", f"runtime.deterministic={str(deterministic).lower()}")
    assert train(cfg) == {"ran": True}
    assert train(cfg, resume=True, progress=False, stop_after=3) == {"ran": True}
    assert seen == [(0, False, True, None, deterministic), (0, True, False, 3, deterministic)]
    assert not torch.are_deterministic_algorithms_enabled()

    def lost(*args):
        monkeypatch.setattr(distributed, "world_size", lambda: 2)  # as if a second process took part
        raise RuntimeError("Connection reset by peer")

    monkeypatch.setattr(train_module, "_run", lost)
    with pytest.raises(distributed.DistributedError, match=r"^rank 0 of 2: training failed: rank 1 stopped answering"):
        train(cfg, resume=True)


def test_checkpoints_every_checkpoint_every_iterations_and_at_the_end_and_stop_after_the_end_finishes(
        tmp_path, monkeypatch):
    from ocnet_edu.engine import train as train_module

    saved = []
    real = train_module.save_checkpoint
    monkeypatch.setattr(train_module, "save_checkpoint",
                        lambda state, path: saved.append(state.iteration) or real(state, path))
    cfg = tiny_config(tmp_path / "run", "schedule.max_iters=5", "schedule.checkpoint_every=2")
    summary = train(cfg, progress=False, stop_after=5)  # stopping at the end is finishing
    assert saved == [2, 4, 5] and "stopped" not in summary and summary["iterations"] == 5
    assert ckpt.load(tmp_path / "run" / "final.pt")["iteration"] == 5


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16, torch.float16])
def test_a_step_runs_under_the_states_autocast_with_its_loss_options_and_frees_the_last_gradients(
        tmp_path, monkeypatch, amp_dtype):
    """Inside :func:`train_step`: autocast on exactly when the state has an AMP dtype, in that dtype
    (float16 set by hand: CPU autocast runs it, the config refuses it on the CPU); the loss gets the
    state's options; the previous step's gradients are freed (``None``, not zeros) before backward."""
    state = setup(tiny_config(tmp_path / "run", "loss.ohem=true", "loss.ohem_min_kept=7"), CPU)
    state.amp_dtype = amp_dtype
    seen, real_loss = [], state.model.loss

    def loss(outputs, labels, **options):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), options))
        return real_loss(outputs, labels, **options)

    monkeypatch.setattr(state.model, "loss", loss)
    real_scale = state.scaler.scale
    freed = []
    monkeypatch.setattr(state.scaler, "scale", lambda value: freed.append(
        all(p.grad is None for p in state.model.parameters())) or real_scale(value))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. CPU autocast refusing a dtype
        for seed in (0, 1):
            train_step(state, *batch(tiny_config(tmp_path / "run"), seed))
    assert state.loss_options["ohem"] is True and state.loss_options["ohem_min_kept"] == 7
    enabled = amp_dtype is not None
    assert [(on, options) for on, _, options in seen] == [(enabled, state.loss_options)] * 2
    if enabled:
        assert [dtype for _, dtype, _ in seen] == [amp_dtype] * 2
    assert freed == [True, True]


def test_resume_with_overwrite_continues_the_run_and_deletes_nothing(tmp_path, capsys):
    """``--resume`` wins over ``--overwrite``: the stopped run goes on from its checkpoint."""
    cfg = tiny_config(tmp_path / "run", "schedule.max_iters=3", "schedule.checkpoint_every=1")
    assert train(cfg, progress=False, stop_after=2)["stopped"]
    first_rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(first_rows) == 3  # the header and two iterations
    capsys.readouterr()
    summary = train(cfg, progress=False, resume=True, overwrite=True)
    assert "starting from scratch" not in capsys.readouterr().out  # the checkpoint was there to resume from
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert summary["iterations"] == 3 and rows[:3] == first_rows and len(rows) == 4


@pytest.mark.parametrize("rank", [0, 1])
@pytest.mark.parametrize("progress", [True, False])
def test_a_run_logs_metrics_and_shows_a_bar_only_on_rank_0_over_the_whole_schedule(tmp_path, monkeypatch, rank, progress):
    """What ``_run`` hands :class:`TrainLog`: the metrics file and the bar belong to rank 0 (a process
    of rank 1 is stood in for by a context without a group), the bar runs from the start to ``max_iters``."""
    from ocnet_edu.engine import train as train_module

    class Built(Exception):
        pass

    made = []

    def record(*args):
        made.append(args)
        raise Built

    monkeypatch.setattr(train_module, "TrainLog", record)
    cfg = tiny_config(tmp_path / "run", "schedule.max_iters=7", "schedule.batch_size=3")
    ctx = distributed.DistributedContext(rank=rank, world_size=1, local_rank=0, device=torch.device("cpu"))
    with pytest.raises(Built):
        train_module._run(cfg, ctx, resume=False, progress=progress, stop_after=None)
    metrics = tmp_path / "run" / train_module.METRICS if rank == 0 else None
    assert made == [(metrics, 0, 7, 3, progress and rank == 0)]


def test_a_run_reports_its_summary_and_says_when_resume_finds_nothing(tmp_path, capsys, monkeypatch):
    from ocnet_edu.engine import train as train_module

    modes = []
    real = train_module._set_train_mode
    monkeypatch.setattr(train_module, "_set_train_mode", lambda model, freeze: modes.append(freeze) or real(model, freeze))
    cfg = tiny_config(tmp_path / "run", "schedule.max_iters=2", "runtime.freeze_bn=true")
    summary = train(cfg, progress=False, resume=True)
    assert f"no checkpoint in {tmp_path / 'run'}; starting from scratch" in capsys.readouterr().out
    assert set(summary) == {"final_loss", "iterations", "out_dir", "world_size"} and modes == [True]
    assert (summary["iterations"], summary["out_dir"], summary["world_size"]) == (2, str(tmp_path / "run"), 1)
    assert math.isfinite(summary["final_loss"])
    again = train(cfg, progress=False, resume=True)  # finished: nothing to do, the last logged loss
    assert "no checkpoint" not in capsys.readouterr().out and again["already_finished"]
    with pytest.raises(ValueError, match="^runtime.log_every must be at least 1, got 0$"):
        train(tiny_config(tmp_path / "bad", "runtime.log_every=0"), progress=False)
