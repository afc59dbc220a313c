"""`make gpu-check`: the GPU training stack end to end on one CUDA GPU, in under 8 minutes, one report.

Usage (from the repository root)::

    .venv/bin/python scripts/gpu_check.py                # on a CUDA machine: docs/gpu-check/report.md
    .venv/bin/python scripts/gpu_check.py --dry-run      # every part at tiny size on the CPU (tests this script)
    make gpu-check            # the same as the first line;  make gpu-check DEVICE=cpu  is the dry run

The parts, each a subprocess with its own time limit (the limits add up to ``--budget``):

1. ``train``: ``torchrun --nproc_per_node=1 -m ocnet_edu train``, Base-OC (ISA) on a dilated
   ResNet-101 at 769×769 on synthetic data of that size, float16 autocast with a GradScaler,
   channels_last, torch.compile, and the process group path (NCCL, DistributedDataParallel,
   SyncBatchNorm; at world size 1 SyncBatchNorm computes plain batch statistics);
2. ``deterministic``: the same with ``runtime.deterministic=true``: its cost, and the operations
   that warned that they have no deterministic CUDA kernel;
3. ``resume``: ``--resume`` from the checkpoint of part 1 for 10 more iterations;
4. ``evaluate``: the final weights with three scales, flipping and sliding windows;
5. ``efficiency``: ``benchmarks/efficiency.py --device cuda`` (Table 4, Fig. 4);
6. ``performance``: ``benchmarks/performance.py --device cuda`` at 128×128: SA and ISA in inference
   and in a training step (peak memory, time, the ratio table of issue 17), and the training
   throughput of the whole model (OCNet, ResNet-101 at 769×769, and the small CPU-scale one);
7. ``chapters``: every chapter under ``pytest --nbval`` with ``OCNET_SCALE=full``.

A part passes when its command exits 0 and its result checks hold; the report gives each part's
time, pass/fail and key numbers, and the script exits 1 if any part failed. Without a CUDA device
it refuses (exit 2, "no CUDA device") unless ``--dry-run`` is given. The dry run writes to
``runs/gpu-check-dry/report.md`` so that it never overwrites the committed GPU report.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("train", "deterministic", "resume", "evaluate", "efficiency", "performance", "chapters")
BUDGET_S = {"train": 100, "deterministic": 60, "resume": 45, "evaluate": 35, "efficiency": 65, "performance": 75,
            "chapters": 100}
"""Each part's share of the time budget, in seconds of the default 480 (8 minutes)."""


@dataclass
class Sizes:
    """What the parts run: the GPU sizes, or tiny ones on the CPU (``--dry-run``)."""

    device: str
    model: dict
    size: int
    batch_size: int
    iters: int
    workers: int
    amp: dict
    compile: bool
    efficiency: list[str]
    performance: list[str]
    chapters: list[str]
    scale: str


def gpu_sizes(args: argparse.Namespace) -> Sizes:
    """The check on a GPU: ResNet-101 + Base-OC (ISA) at 769×769, float16, compiled."""
    return Sizes("cuda", {"backbone": "resnet101", "context": "base_oc_isa", "num_classes": 19}, args.size,
                 args.batch_size, args.iters, 8, {"amp": True, "amp_dtype": "float16"}, True,
                 ["--device", "cuda"], ["--device", "cuda", "--sizes", "128x128", "--model-steps", "5"],
                 args.chapters or ["book"], "full")


def cpu_sizes(args: argparse.Namespace) -> Sizes:
    """The dry run: the same parts at a size a CPU runs in seconds (bfloat16: float16 needs a GPU)."""
    model = {"backbone": "small", "backbone_options": {"width": 8, "blocks": [1, 1, 1]}, "context": "base_oc_isa",
             "context_options": {"channels": 16, "groups": [2, 2]}, "num_classes": 5}
    return Sizes("cpu", model, 48, 2, 4, 1, {"amp": True, "amp_dtype": "bfloat16"}, False,
                 ["--device", "cpu", "--side", "8", "--warmup", "0", "--repeats", "1", "--names", "base_oc_isa"],
                 ["--device", "cpu", "--sizes", "8x8", "--channels", "16", "--variants", "sa_fused", "isa_fused",
                  "--matmul", "256", "--repeats", "1", "--processes", "1", "--model-steps", "1", "--model-side", "32"],
                 args.chapters or ["book/01_introduction.md"], "small")


@dataclass
class Outcome:
    """One part's result: passed, seconds, key numbers (name -> text) and a note."""

    name: str
    passed: bool = False
    seconds: float = 0.0
    numbers: dict[str, str] = field(default_factory=dict)
    note: str = ""


def run(command: list[str], log: Path, timeout: float, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """Run ``command`` in the repository root; stdout+stderr to ``log``. Returns (exit status, output, seconds);
    status 124 when it ran past ``timeout``."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        status, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as expired:
        status, output = 124, text(expired.stdout) + text(expired.stderr) + f"\n[gpu-check] timed out after {timeout:.0f} s"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"$ {' '.join(command)}\n{output}")
    return status, output, time.perf_counter() - start


def text(output: str | bytes | None) -> str:
    """A subprocess output as text (``TimeoutExpired`` gives bytes even with ``text=True``)."""
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def free_port() -> int:
    """A free TCP port for torchrun's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_config(sizes: Sizes, work: Path) -> Path:
    """Write the training config of the check (synthetic scenes of ``size``², ``iters`` iterations)."""
    config = {
        "model": {**sizes.model, "pretrained": None},
        "data": {"dataset": "synthetic", "crop_size": [sizes.size] * 2, "synthetic_size": [sizes.size] * 2,
                 "synthetic_length": 64},
        "schedule": {"max_iters": sizes.iters, "batch_size": sizes.batch_size, "checkpoint_every": sizes.iters},
        "runtime": {"device": sizes.device, **sizes.amp, "channels_last": True, "compile": sizes.compile,
                    "workers": sizes.workers, "log_every": 1 if sizes.device == "cpu" else 10, "seed": 0},
    }
    path = work / "train.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def torchrun_train(config: Path, out_dir: Path, *extra: str) -> list[str]:
    """``torchrun --nproc_per_node=1 -m ocnet_edu train`` of ``config`` into ``out_dir``."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", f"--master_port={free_port()}",
            "-m", "ocnet_edu", "train", "--config", str(config), "--no-progress", f"runtime.out_dir={out_dir}", *extra]


def summary_of(output: str) -> dict:
    """The JSON summary ``python -m ocnet_edu train`` prints last (``{}`` if none)."""
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return {}


def throughput(run_dir: Path) -> float:
    """Median images/s of ``metrics.csv`` without its first row (compilation, cuDNN autotuning)."""
    with (run_dir / "metrics.csv").open(newline="") as f:
        rows = [float(r["images_per_s"]) for r in csv.DictReader(f)]
    return statistics.median(rows[1:] or rows) if rows else float("nan")


def training_part(name: str, sizes: Sizes, work: Path, timeout: float, *extra: str, resume: bool = False) -> Outcome:
    """A ``torchrun`` training run into ``work/<run>``; checks the summary's iterations."""
    out_dir = work / ("deterministic" if name == "deterministic" else "run")
    command = torchrun_train(work / "train.yaml", out_dir, *extra)
    if resume:
        command.insert(command.index("--no-progress"), "--resume")
    status, output, seconds = run(command, work / f"{name}.log", timeout,
                                  env={"TORCH_LOGS": "graph_breaks", "NCCL_DEBUG": "VERSION"})
    summary, expected = summary_of(output), sizes.iters + (10 if resume else 0)
    outcome = Outcome(name, seconds=seconds)
    loss = summary.get("final_loss")
    outcome.passed = status == 0 and summary.get("iterations") == expected and isinstance(loss, float) and math.isfinite(loss)
    outcome.numbers = {"exit status": str(status), "iterations": str(summary.get("iterations")),
                       "final loss": f"{summary.get('final_loss', float('nan')):.4f}",
                       "graph breaks logged": str(output.count("Graph break"))}
    if sizes.device == "cuda":
        sync_bn = re.search(r"each of the (\d+) SyncBatchNorm", output)
        outcome.numbers["NCCL initialised"] = "yes" if "NCCL version" in output else "no"
        outcome.numbers["SyncBatchNorm layers"] = sync_bn.group(1) if sync_bn else "no warning seen"
    if status == 0:
        outcome.numbers["images/s (median)"] = f"{throughput(out_dir):.2f}"
    if name == "deterministic":
        warned = sorted(set(re.findall(r"(\w+) does not have a deterministic implementation", output)))
        outcome.numbers["ops without a deterministic kernel"] = ", ".join(warned) or "none"
    if status != 0:
        outcome.note = last_lines(output)
    return outcome


def evaluate_part(sizes: Sizes, work: Path, timeout: float) -> Outcome:
    """Multi-scale + flip + sliding-window evaluation of the trained weights on 4 validation scenes."""
    run_dir, out = work / "run", work / "scores.json"
    command = [sys.executable, "-m", "ocnet_edu", "evaluate", "--config", str(run_dir / "config.yaml"),
               "--checkpoint", str(run_dir / "final.pt"), "--scales", "0.75", "1.0", "1.25", "--flip", "--sliding",
               "--out", str(out), "data.synthetic_length=16"]
    status, output, seconds = run(command, work / "evaluate.log", timeout)
    outcome = Outcome("evaluate", seconds=seconds, numbers={"exit status": str(status)})
    if status == 0 and out.exists():
        scores = json.loads(out.read_text())
        outcome.passed = 0.0 <= scores["miou"] <= 1.0 and scores["flip"] is True
        outcome.numbers.update({"images": str(scores["images"]), "mIoU": f"{scores['miou']:.4f}",
                                "pixel acc": f"{scores['pixel_acc']:.4f}",
                                "s/image": f"{seconds / max(scores['images'], 1):.2f} (incl. start-up)"})
    else:
        outcome.note = last_lines(output)
    return outcome


def efficiency_part(sizes: Sizes, work: Path, timeout: float) -> Outcome:
    """``benchmarks/efficiency.py``: rows measured, and ISA's speed-up over SA where both were timed."""
    out = work / "efficiency"
    status, output, seconds = run([sys.executable, "benchmarks/efficiency.py", *sizes.efficiency, "--out", str(out)],
                                  work / "efficiency.log", timeout)
    outcome = Outcome("efficiency", passed=status == 0, seconds=seconds, numbers={"exit status": str(status)})
    table = out / f"efficiency_{sizes.device}.csv"
    if status == 0 and table.exists():
        with table.open(newline="") as f:
            rows = list(csv.DictReader(f))
        outcome.numbers["rows"] = str(len(rows))
        times = {(r.get("kind"), r.get("fused")): float(r["time_median_ms"]) for r in rows if "time_median_ms" in r}
        if ("sa", "False") in times and ("isa", "False") in times:
            outcome.numbers["ISA speed-up over SA (explicit softmax)"] = f"{times['sa', 'False'] / times['isa', 'False']:.2f}×"
    elif status != 0:
        outcome.note = last_lines(output)
    return outcome


def performance_part(sizes: Sizes, work: Path, timeout: float) -> Outcome:
    """``benchmarks/performance.py``: the training step of SA and ISA, its ratio table, and the
    whole model's training throughput; passes when it ran (a target missed is a number, not a failure)."""
    out = work / "performance"
    status, output, seconds = run([sys.executable, "benchmarks/performance.py", *sizes.performance, "--out", str(out)],
                                  work / "performance.log", timeout)
    outcome = Outcome("performance", passed=status == 0, seconds=seconds, numbers={"exit status": str(status)})
    targets, models = out / f"performance_targets_{sizes.device}.csv", out / f"model_training_{sizes.device}.csv"
    if status == 0 and targets.exists():
        with targets.open(newline="") as f:
            for row in csv.DictReader(f):
                outcome.numbers[f"{row['size']}: {row['target']}"] = f"{row['ratio']} ({row['limit']}: {row['met']})"
    if status == 0 and models.exists():
        with models.open(newline="") as f:
            for row in csv.DictReader(f):
                outcome.numbers[f"{row['model']} training"] = (
                    f"{row['images_per_s']} images/s, batch {row['batch']} at {row['crop']}, "
                    f"peak {row['peak_memory_mb']} MiB")
    if status != 0:
        outcome.note = last_lines(output)
    return outcome


def chapters_part(sizes: Sizes, work: Path, timeout: float) -> Outcome:
    """Every chapter through ``pytest --nbval`` at ``OCNET_SCALE`` full (small in the dry run)."""
    command = [sys.executable, "-m", "pytest", "--nbval", "-q", "-p", "no:cacheprovider", *sizes.chapters]
    status, output, seconds = run(command, work / "chapters.log", timeout, env={"OCNET_SCALE": sizes.scale})
    counts = dict((word, int(n)) for n, word in re.findall(r"(\d+) (passed|failed|errors?)", output))
    outcome = Outcome("chapters", passed=status == 0, seconds=seconds,
                      numbers={"exit status": str(status), "OCNET_SCALE": sizes.scale,
                               "chapters": " ".join(sizes.chapters), **{k: str(v) for k, v in counts.items()}})
    if status != 0:
        outcome.note = last_lines(output)
    return outcome


def last_lines(output: str, count: int = 12) -> str:
    """The last ``count`` lines of a part's output, for the report."""
    return "\n".join(output.strip().splitlines()[-count:])


def machine() -> dict[str, str]:
    """Torch, CUDA, the GPU and what ``runtime.amp_dtype=auto`` picks on it."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": str(torch.version.cuda)}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        info.update({"gpu": f"{props.name} (sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB)",
                     "nccl": ".".join(map(str, torch.cuda.nccl.version())),
                     "native bfloat16": str(native), "amp_dtype=auto picks": "bfloat16" if native else "float16"})
    return info


def report(outcomes: list[Outcome], sizes: Sizes, dry_run: bool, total: float) -> str:
    """The report as Markdown: machine, one table row per part, then each part's numbers and notes."""
    title = "GPU check (dry run on the CPU: tiny sizes, not a GPU result)" if dry_run else "GPU check"
    lines = [f"# {title}", "", f"Written by `scripts/gpu_check.py` on {time.strftime('%Y-%m-%d %H:%M')} "
             f"in {total:.0f} s.", ""]
    lines += [f"- {k}: {v}" for k, v in machine().items()]
    lines += ["", f"Training: {sizes.model['backbone']} + {sizes.model['context']}, {sizes.size}×{sizes.size}, "
              f"batch {sizes.batch_size}, {sizes.iters} iterations, {sizes.amp['amp_dtype']} autocast, channels_last, "
              f"compile={sizes.compile}, torchrun --nproc_per_node=1.", "",
              "| part | result | seconds |", "| --- | --- | --- |"]
    lines += [f"| {o.name} | {'PASS' if o.passed else 'FAIL'} | {o.seconds:.1f} |" for o in outcomes]
    for o in outcomes:
        lines += ["", f"## {o.name}", ""] + [f"- {k}: {v}" for k, v in o.numbers.items()]
        if o.note:
            lines += ["", "```", o.note, "```"]
    return "\n".join(lines) + "\n"


def deterministic_cost(outcomes: list[Outcome]) -> None:
    """Add the cost of ``runtime.deterministic`` (throughput ratio) to its part's numbers."""
    by_name = {o.name: o for o in outcomes}
    plain, strict = by_name.get("train"), by_name.get("deterministic")
    if plain and strict and "images/s (median)" in plain.numbers and "images/s (median)" in strict.numbers:
        ratio = float(plain.numbers["images/s (median)"]) / max(float(strict.numbers["images/s (median)"]), 1e-9)
        strict.numbers["slow-down vs. train"] = f"{ratio:.2f}×"


def run_parts(parts: list[str], sizes: Sizes, work: Path, budget: float) -> list[Outcome]:
    """Run ``parts`` in order, each within its share of ``budget`` seconds (and what is left of it)."""
    scale, start, outcomes = budget / sum(BUDGET_S.values()), time.perf_counter(), []
    train_config(sizes, work)
    for name in parts:
        left = budget - (time.perf_counter() - start)
        timeout = max(5.0, min(BUDGET_S[name] * scale, left))
        print(f"[gpu-check] {name} (limit {timeout:.0f} s) ...", flush=True)
        if name in ("train", "deterministic", "resume"):
            extra = {"train": (), "deterministic": ("runtime.deterministic=true",),
                     "resume": (f"schedule.max_iters={sizes.iters + 10}",)}[name]
            outcome = training_part(name, sizes, work, timeout, *extra, resume=name == "resume")
        else:
            outcome = {"evaluate": evaluate_part, "efficiency": efficiency_part, "performance": performance_part,
                       "chapters": chapters_part}[name](
                sizes, work, timeout)
        print(f"[gpu-check] {name}: {'PASS' if outcome.passed else 'FAIL'} in {outcome.seconds:.1f} s", flush=True)
        outcomes.append(outcome)
    deterministic_cost(outcomes)
    return outcomes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="every part at tiny size on the CPU")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--report", type=Path, help="default: docs/gpu-check/report.md (dry run: runs/gpu-check-dry/)")
    parser.add_argument("--work", type=Path, help="run directories and logs (default: runs/gpu-check[-dry])")
    parser.add_argument("--budget", type=float, help="seconds for all parts together (default 480; dry run 900)")
    parser.add_argument("--size", type=int, default=769, help="crop and image side on the GPU")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--chapters", nargs="+", help="chapters for pytest --nbval (default: book/)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Refuse without CUDA (unless ``--dry-run``), run the parts, write the report; 0 if all passed."""
    args = parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu-check: no CUDA device (torch.cuda.is_available() is False); it needs one NVIDIA GPU. "
              "Run `make gpu-check DEVICE=cpu` (scripts/gpu_check.py --dry-run) to test the script on the CPU.",
              file=sys.stderr)
        return 2
    sizes = cpu_sizes(args) if args.dry_run else gpu_sizes(args)
    suffix = "-dry" if args.dry_run else ""
    work = args.work or ROOT / "runs" / f"gpu-check{suffix}"
    report_path = args.report or (work / "report.md" if args.dry_run else ROOT / "docs" / "gpu-check" / "report.md")
    shutil.rmtree(work / "run", ignore_errors=True)  # our own run directories: a fresh start
    shutil.rmtree(work / "deterministic", ignore_errors=True)
    start = time.perf_counter()
    outcomes = run_parts(args.parts, sizes, work, args.budget or (900.0 if args.dry_run else 480.0))
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(report(outcomes, sizes, args.dry_run, time.perf_counter() - start))
    failed = [o.name for o in outcomes if not o.passed]
    print(f"[gpu-check] report: {report_path}; " + (f"FAILED: {', '.join(failed)}" if failed else "all parts passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
