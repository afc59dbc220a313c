"""Reliability of checkpoints and run directories: corrupted bytes, another model, the wrong kind
of file, a full disk, a process killed while writing, an existing run, a cut metrics log."""

from __future__ import annotations

import csv
import errno
import math
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

from ocnet_edu.config import load_config
from ocnet_edu.engine import checkpoint as ckpt
from ocnet_edu.engine.checkpoint import CheckpointError
from ocnet_edu.engine.evaluate import load_model
from ocnet_edu.engine.run_dir import RunDirectoryError, WriteError
from ocnet_edu.engine.train import train
from ocnet_edu.engine.train_log import MetricsWriter
from ocnet_edu.zoo.digits import digit_model_path

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = ROOT / "configs" / "synthetic.yaml"
SHORT = ["schedule.max_iters=10", "schedule.batch_size=4", "schedule.checkpoint_every=5", "data.synthetic_length=16"]


def config(out_dir, *overrides):
    return load_config(SYNTHETIC, [*SHORT, f"runtime.out_dir={out_dir}", *overrides])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 10-iteration run (checkpoints at 5 and 10); tests copy what they change."""
    out = tmp_path_factory.mktemp("run")
    train(config(out), progress=False)
    return out


def copy_run(run: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for path in run.iterdir():
        if path.is_file():
            (dest / path.name).write_bytes(path.read_bytes())
    return dest


def flip_tensor_byte(path: Path) -> None:
    """Flip one byte inside the largest tensor record of a torch zip file (not its metadata)."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len = int.from_bytes(raw[info.header_offset + 26: info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28: info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + info.file_size // 2] ^= 0x40
    path.write_bytes(bytes(raw))


def test_corrupted_bytes_are_refused_naming_the_file(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    torch.load(run / "checkpoint.pt", weights_only=True)  # plain torch reads the damaged file without a word
    flip_tensor_byte(run / "checkpoint.pt")
    flip_tensor_byte(run / "final.pt")
    assert isinstance(torch.load(run / "checkpoint.pt", weights_only=True), dict)
    with pytest.raises(CheckpointError, match=rf"{run / 'checkpoint.pt'} is corrupted"):
        ckpt.load(run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=rf"{run / 'checkpoint.pt'} is corrupted"):
        train(config(run, "schedule.max_iters=20"), resume=True, progress=False)
    with pytest.raises(CheckpointError, match=rf"{run / 'final.pt'} is corrupted"):
        load_model(config(run), run / "final.pt")


def test_checksum_covers_every_value_and_old_files_still_load(tmp_path):
    obj = {"model": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.bfloat16)},
           "iteration": 3, "rng": [{"python": [3, [1, 2], None]}]}
    ckpt.atomic_save(obj, tmp_path / "a.pt")
    assert ckpt.CHECKSUM in torch.load(tmp_path / "a.pt", weights_only=True)
    loaded = ckpt.load(tmp_path / "a.pt")
    assert ckpt.CHECKSUM not in loaded and ckpt.content_checksum(loaded) == ckpt.content_checksum(obj)
    assert ckpt.content_checksum({**obj, "iteration": 4}) != ckpt.content_checksum(obj)
    torch.save(obj, tmp_path / "old.pt")  # written without a checksum: still loads
    assert ckpt.load(tmp_path / "old.pt")["iteration"] == 3
    for context in ("none", "base_oc_isa", "base_oc_sa"):  # the shipped digit models have none
        assert "model" in ckpt.load(digit_model_path(context))


def test_every_checkpoint_stores_the_model_config(finished_run):
    for name in ("checkpoint.pt", "final.pt"):
        stored = ckpt.load(finished_run / name)[ckpt.MODEL_CONFIG]
        assert stored["context_options"] == {"channels": 64, "groups": [2, 2]} and stored["num_classes"] == 5


def test_another_model_config_is_refused_naming_the_keys(finished_run, tmp_path):
    other = config(finished_run, "model.context_options.groups=[4,4]", "model.dropout=0.2")
    with pytest.raises(CheckpointError, match=r"model\.context_options\.groups: checkpoint \[2, 2\], config \[4, 4\]") as caught:
        load_model(other, finished_run / "final.pt")
    assert "model.dropout" in str(caught.value)
    run = copy_run(finished_run, tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"model\.context_options\.groups"):
        train(config(run, "model.context_options.groups=[4,4]", "schedule.max_iters=20"), resume=True, progress=False)
    load_model(config(finished_run, "model.pretrained=null"), finished_run / "final.pt")  # the path may differ


def test_old_checkpoint_without_model_config_warns(finished_run, tmp_path):
    state = ckpt.load(finished_run / "final.pt")
    torch.save({"model": state["model"]}, tmp_path / "old.pt")
    with pytest.warns(UserWarning, match="stores no model config"):
        load_model(config(finished_run), tmp_path / "old.pt")


def test_final_pt_as_checkpoint_is_a_clear_error(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    (run / "checkpoint.pt").write_bytes((run / "final.pt").read_bytes())
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt is not a training checkpoint: it lacks optimizer"):
        train(config(run, "schedule.max_iters=20"), resume=True, progress=False)


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 64 vs 0")])
def test_full_disk_says_so_and_keeps_the_old_checkpoint(tmp_path, monkeypatch, failure):
    path = tmp_path / "checkpoint.pt"
    ckpt.atomic_save({"iteration": 1}, path)

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"\0" * 4096)
        raise failure

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    with pytest.raises(WriteError, match=rf"could not write the checkpoint {path}: no space left on device"):
        ckpt.atomic_save({"iteration": 2}, path)
    monkeypatch.undo()
    assert ckpt.load(path)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left


KILLED_WHILE_SAVING = textwrap.dedent("""
    import os, signal, sys
    import torch
    from ocnet_edu.config import load_config
    from ocnet_edu.engine.train import train

    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        if obj.get("iteration") == 10 and "optimizer" in obj:  # half of checkpoint 10, then SIGKILL
            f.write(b"\\0" * 200_000)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    torch.save = dying_save
    train(load_config(sys.argv[1], sys.argv[2:]), progress=False)
""")


@pytest.mark.slow
def test_killed_while_writing_a_checkpoint_then_resumed_exactly(finished_run, tmp_path):
    run = tmp_path / "killed"
    done = subprocess.run([sys.executable, "-c", KILLED_WHILE_SAVING, str(SYNTHETIC), *SHORT, f"runtime.out_dir={run}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    stale = list(run.glob(".checkpoint.pt.*.tmp"))
    assert len(stale) == 1 and stale[0].stat().st_size >= 200_000  # what a killed writer leaves
    assert ckpt.load(run / "checkpoint.pt")["iteration"] == 5  # the previous checkpoint is whole
    train(config(run), resume=True, progress=False)
    assert not list(run.glob(".*.tmp"))
    a, b = ckpt.load(finished_run / "final.pt")["model"], ckpt.load(run / "final.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (run / "metrics.csv").read_text().splitlines()[1:] and len(read_rows(run)) == 10


def read_rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_stale_temporaries_are_removed_at_start(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".checkpoint.pt.abcd1234.tmp").write_bytes(b"\0" * 1000)
    (run / ".metrics.csv.x.tmp").write_text("iteration\n")
    train(config(run, "schedule.max_iters=2"), progress=False, overwrite=True)
    assert not list(run.glob(".*.tmp"))


def test_existing_run_is_not_overwritten_without_a_flag(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    metrics = (run / "metrics.csv").read_text()
    with pytest.raises(RunDirectoryError, match=rf"runtime.out_dir {run} is not empty.*--resume.*--overwrite"):
        train(config(run), progress=False)
    assert (run / "metrics.csv").read_text() == metrics
    (run / "notes.txt").write_text("mine")
    summary = train(config(run, "schedule.max_iters=3"), progress=False, overwrite=True)
    assert summary["iterations"] == 3 and len(read_rows(run)) == 3
    assert ckpt.load(run / "final.pt")["iteration"] == 3 and (run / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_cli_refuses_an_existing_run_and_accepts_overwrite(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    command = [sys.executable, "-m", "ocnet_edu", "train", "--no-progress", "--config", str(SYNTHETIC), *SHORT,
               f"runtime.out_dir={run}", "schedule.max_iters=2"]
    refused = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "is not empty" in refused.stderr and "Traceback" not in refused.stderr
    accepted = subprocess.run([*command, "--overwrite"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert accepted.returncode == 0, accepted.stderr[-2000:]


def test_resuming_a_finished_run_reports_its_last_loss(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    summary = train(config(run), resume=True, progress=False)
    assert summary["already_finished"] and not math.isnan(summary["final_loss"])
    assert summary["final_loss"] == pytest.approx(float(read_rows(finished_run)[-1]["loss"]))
    assert read_rows(run) == read_rows(finished_run)


def test_crash_while_rewriting_the_log_keeps_every_row(finished_run, tmp_path, monkeypatch):
    run = copy_run(finished_run, tmp_path / "run")
    before = (run / "metrics.csv").read_text()

    def die(self, rows):
        raise KeyboardInterrupt  # the process stops half-way through the rewrite

    monkeypatch.setattr(csv.DictWriter, "writerows", die)
    with pytest.raises(KeyboardInterrupt):
        MetricsWriter(run / "metrics.csv", start=5)
    assert (run / "metrics.csv").read_text() == before
    assert not list(run.glob(".*.tmp"))


def test_a_row_cut_by_a_crash_is_dropped_on_resume(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    with (run / "metrics.csv").open("a") as f:
        f.write("1")  # the start of row 11, cut off
    MetricsWriter(run / "metrics.csv", start=10)
    assert read_rows(run) == read_rows(finished_run)
