"""scripts/gpu_check.py (`make gpu-check`): it refuses without CUDA, and its dry run runs the parts
at tiny size on the CPU and writes the report (the GPU sizes themselves run only on a GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def gpu_check(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.mark.slow
def test_gpu_check_refuses_loudly_without_a_cuda_device(tmp_path):
    done = gpu_check("--report", str(tmp_path / "report.md"), "--work", str(tmp_path / "work"),
                     env={"CUDA_VISIBLE_DEVICES": ""})  # hides a GPU, if this machine has one
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr and "DEVICE=cpu" in done.stderr
    assert not (tmp_path / "report.md").exists()


@pytest.mark.slow
def test_gpu_check_dry_run_trains_resumes_evaluates_and_reports(tmp_path):
    report = tmp_path / "report.md"
    done = gpu_check("--dry-run", "--parts", "train", "resume", "evaluate", "--work", str(tmp_path / "work"),
                     "--report", str(report))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    text = report.read_text()
    assert "dry run on the CPU" in text
    for part in ("train", "resume", "evaluate"):
        assert f"| {part} | PASS |" in text
    assert "- iterations: 4" in text and "- iterations: 14" in text  # 4 steps, then 10 more after --resume
    assert (tmp_path / "work" / "run" / "final.pt").exists()


def test_make_gpu_check_is_a_target_and_documented():
    makefile, readme = (ROOT / "Makefile").read_text(), (ROOT / "README.md").read_text()
    assert "\ngpu-check: install\n\t$(PY) scripts/gpu_check.py $(if $(filter cpu,$(DEVICE)),--dry-run)" in makefile
    assert "make gpu-check" in readme
