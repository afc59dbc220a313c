"""ISA's engine targets (issue 17): memory and time of SA and ISA, inference and a training step.

Command line (from the repository root)::

    .venv/bin/python benchmarks/performance.py                    # CPU: the three sizes below
    .venv/bin/python benchmarks/performance.py --sizes 32x32      # a quick run
    .venv/bin/python benchmarks/performance.py --device cuda      # on a GPU (+ ResNet-101 training)

(``python -m ocnet_edu.experiments.performance`` takes the same arguments.) On ``[1, 512, H, W]``
for ``H×W`` in 128×128 (Fig. 4), 97×97 (a 769 crop at output stride 8) and 128×256 (a test
image), for SA and ISA with the explicit softmax path and with the fused one (ISA's default
path, :func:`ocnet_edu.nn.isa_lean.lean_forward`), and Algorithm 1's transcription
(:func:`ocnet_edu.nn.reference.algorithm1_isa`), in inference and in one training step
(forward, ``mean(y²)``, backward):

* **allocator peak**: on the CPU the largest total of memory PyTorch's allocator held during the
  first pass of a fresh process, from :mod:`torch.profiler` with ``profile_memory=True`` (every
  allocation and free, in order); on CUDA ``torch.cuda.max_memory_allocated`` above the level
  before the pass (after one warm-up pass that creates the library workspaces);
* **RSS peak** (CPU only): the peak resident set size of the first pass in a fresh process
  (VmHWM reset just before it), median of ``--processes`` processes for the fused SA and ISA (the
  targets' pair), one process for the others; ``torch._dynamo``, which the first call of
  :func:`torch.utils.checkpoint.checkpoint` imports, is imported before the reset. It also counts what the C
  library's ``malloc`` keeps after a free (see the efficiency chapter), so it is shown beside
  the allocator peak, and the targets are checked on the allocator peak;
* **time**: every variant of one size and mode timed in one process, in rotating order, after a
  warm-up pass; medians of ``--repeats``. On the CPU, a 4096² float32 matrix product is timed in
  the same loop, so that ISA's throughput (GFLOP/s) is given as a fraction of the machine's: the
  median over repeats of the ratio of the two rates in the same repeat (so that a machine whose
  speed drifts during the run does not move the ratio); with each timed pass, the page faults it
  took (``ru_minflt``, in MiB of 4 KiB pages: new memory the kernel had to hand the process).

Then a whole model: OCNet (Base-OC with ISA) trained for a few SGD steps on random images, with a
small backbone on the CPU and also the paper's dilated ResNet-101 at 769×769 on CUDA:
images/s and the peak memory of a step.

Outputs in ``--out`` (default ``benchmarks/results``): ``performance_<device>.csv`` (one row per
size, mode and variant), ``performance_targets_<device>.csv`` (the ratio table, also printed)
and ``model_training_<device>.csv``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ocnet_edu.experiments.efficiency import DEFAULT_OUT, ISA_GROUPS, peak_rss, reset_peak_rss

__all__ = ["MODES", "SIZES", "VARIANTS", "allocator_peak_mb", "build_variant", "main", "model_training",
           "paired_rate", "targets_table", "variants_for"]

SIZES = ((128, 128), (97, 97), (128, 256))
"""``(H, W)`` of the feature maps measured: Fig. 4's, a 769×769 training crop's, a 1024×2048 image's."""
CHANNELS = 512
MODES = ("inference", "training")
VARIANTS = ("sa_explicit", "sa_fused", "isa_explicit", "isa_fused", "isa_algorithm1")
MATMUL_SIDE = 4096


def variants_for(size: tuple[int, int], device: str, wanted: tuple[str, ...] = VARIANTS) -> list[str]:
    """What is measured at ``size`` (of ``wanted``): Algorithm 1 needs sizes divisible by the groups;
    the explicit SA (two ``N×N`` matrices, 8 GiB at 128×256) only up to 128×128 on the CPU."""
    names = [name for name in VARIANTS if name in wanted]
    if size[0] % ISA_GROUPS[0] or size[1] % ISA_GROUPS[1]:
        names = [name for name in names if name != "isa_algorithm1"]
    if device == "cpu" and size[0] * size[1] > 128 * 128:
        names = [name for name in names if name != "sa_explicit"]
    return names


def build_variant(name: str, device: torch.device, channels: int = CHANNELS,
                  seed: int = 0) -> tuple[torch.nn.Module, Callable]:
    """The module of variant ``name`` (``[1, C, H, W] → [1, C, H, W]``, C = 512 by default) and what
    one pass calls."""
    from ocnet_edu import InterlacedSparseSelfAttention, SelfAttention
    from ocnet_edu.nn.reference import algorithm1_isa

    torch.manual_seed(seed)
    kind, path = name.rsplit("_", 1)
    module = SelfAttention(channels) if kind == "sa" else InterlacedSparseSelfAttention(channels, groups=ISA_GROUPS)
    module = module.to(device)
    module.fused = path != "explicit"
    if path == "algorithm1":
        return module, lambda x: algorithm1_isa(x, module.stage("global"), module.stage("local"), *ISA_GROUPS)
    return module, module


def _pass(module: torch.nn.Module, run: Callable, x: torch.Tensor, mode: str) -> None:
    """One inference pass, or one training step (forward, ``mean(y²)``, backward)."""
    module.train(mode == "training")
    if mode == "inference":
        with torch.inference_mode():
            run(x)
        return
    module.zero_grad(set_to_none=True)
    run(x).square().mean().backward()


def allocator_peak_mb(fn: Callable[[], None]) -> float:
    """MiB: the largest total PyTorch's CPU allocator held while ``fn()`` ran (torch.profiler,
    ``profile_memory=True``: every allocation and free, summed in time order)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak / 2**20


def _measure_memory(name: str, size: tuple[int, int], mode: str, device: str, what: str, channels: int) -> float:
    """In this (fresh) process: the allocator or RSS peak (MiB) of the first pass of ``name``."""
    dev = torch.device(device)
    module, run = build_variant(name, dev, channels)
    x = torch.randn(1, channels, *size, device=dev)
    if dev.type == "cuda":
        _pass(module, run, x, mode)  # warm-up: library workspaces are not the module's memory
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        _pass(module, run, x, mode)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    if what == "allocator":
        return allocator_peak_mb(lambda: _pass(module, run, x, mode))
    # a one-off import, not memory of the pass: torch.utils.checkpoint (ISA's training path) imports
    # torch._dynamo on its first call, about 90 MB of resident modules; imported here for every variant
    importlib.import_module("torch._dynamo")
    before = reset_peak_rss()
    _pass(module, run, x, mode)
    return (peak_rss() - before) / 1024


def _products_alone(shapes: list[tuple[int, int, int, int]], device: torch.device) -> tuple[Callable[[], None], float]:
    """A pass that runs only these matrix products on contiguous random operands, and its GFLOPs."""
    operands = [(torch.randn(b, m, k, device=device), torch.randn(b, k, n, device=device)) for b, m, k, n in shapes]

    def run() -> None:
        for a, b in operands:
            torch.bmm(a, b)

    return run, sum(2 * b * m * k * n for b, m, k, n in shapes) / 1e9


def _measure_times(names: list[str], size: tuple[int, int], mode: str, device: str, repeats: int,
                   matmul: int, channels: int) -> dict[str, list[float]]:
    """In one process: every variant (and a ``matmul``² matmul, unless 0) timed in rotating order; ms.

    With the matmul (inference), ``isa_fused``'s own matrix products are also timed alone
    (``isa_products``: the same shapes, recorded by :func:`ocnet_edu.profiling.product_shapes`, nothing
    else), the rate ISA's products reach at their sizes;
    its GFLOPs are returned as ``gflops:isa_products``."""
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    x = torch.randn(1, channels, *size, device=dev)
    runs, extra = {}, {}
    for name in names:
        module, run = build_variant(name, dev, channels)
        runs[name] = (lambda m, r: (lambda: _pass(m, r, x, mode)))(module, run)
    if matmul:
        a, b = (torch.randn(matmul, matmul, device=dev) for _ in range(2))
        runs["matmul"] = lambda: torch.mm(a, b)
        if "isa_fused" in runs:
            from ocnet_edu.profiling import product_shapes

            runs["isa_products"], extra["gflops:isa_products"] = _products_alone(
                product_shapes(runs["isa_fused"]), dev)
    for run in runs.values():  # warm-up
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    faults: dict[str, list[int]] = {f"faults:{name}": [] for name in runs}
    order = list(runs)
    for repeat in range(repeats):
        shift = repeat % len(order)
        for name in order[shift:] + order[:shift]:
            elapsed, pages = _timed(runs[name], sync)
            times[name].append(elapsed)
            faults[f"faults:{name}"].append(pages)
    return {**times, **extra, **faults}


def _timed(run: Callable[[], None], sync: Callable[[], None]) -> tuple[float, int]:
    """``run()``'s wall time in ms, and the minor page faults it took (new pages the kernel handed
    the process; counted outside the timed interval)."""
    sync()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    run()
    sync()
    elapsed = (time.perf_counter() - start) * 1e3
    return elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _pages_mib(counts: list[int]) -> float:
    """The median of page counts, in MiB (rounded to 0.1)."""
    return round(statistics.median(counts) * resource.getpagesize() / 2**20, 1)


#: glibc's ``malloc`` told to keep freed memory instead of returning it to the kernel (no ``mmap`` of
#: its own below 1 GiB, no trimming of the heap below 4 GiB): what the benchmark compares the
#: default with, in a separate process, to show what new memory costs (the efficiency chapter).
KEPT_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**32)}


def paired_rate(gflops: float, times: list[float], reference_gflops: float, reference_times: list[float]) -> float:
    """The median over repeats of (GFLOP/s of a pass) / (GFLOP/s of the reference in the same repeat)."""
    return statistics.median((gflops / t) / (reference_gflops / r) for t, r in zip(times, reference_times, strict=True))


def _child(flag: str, payload: dict, env: dict[str, str] | None = None) -> object:
    """Run this module in a fresh process with ``flag payload``; its last stdout line, as JSON."""
    command = [sys.executable, "-m", "ocnet_edu.experiments.performance", flag, json.dumps(payload)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"{flag} {payload} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_size(size: tuple[int, int], device: str, repeats: int, processes: int, matmul: int,
                 channels: int = CHANNELS, wanted: tuple[str, ...] = VARIANTS,
                 log: Callable[[str], None] = print) -> list[dict]:
    """Every row of ``performance_<device>.csv`` for one size: times per mode in one process, then
    memory per variant and mode in fresh processes. ``matmul``: side of the reference product (0: none)."""
    from ocnet_edu.profiling import count_gflops

    names = variants_for(size, device, wanted)
    rows = []
    for mode in MODES:
        payload = {"names": names, "size": size, "mode": mode, "device": device, "repeats": repeats,
                   "matmul": matmul if mode == "inference" else 0, "channels": channels}
        times = _child("--time-child", payload)
        kept = {}  # ISA and the matmul again, in a process whose malloc keeps freed memory
        matmul_gflops = 2 * matmul**3 / 1e9
        if device == "cpu" and mode == "inference" and matmul and "isa_fused" in names:
            kept = _child("--time-child", {**payload, "names": ["isa_fused"]}, env=KEPT_MALLOC)
        for name in [*names, *(n for n in ("matmul", "isa_products") if n in times)]:
            row = {"size": f"{size[0]}x{size[1]}", "mode": mode, "variant": name,
                   "time_median_ms": round(statistics.median(times[name]), 1),
                   "time_min_ms": round(min(times[name]), 1), "time_max_ms": round(max(times[name]), 1)}
            row["page_faults_mib"] = _pages_mib(times[f"faults:{name}"])
            if name == "matmul":
                row["variant"] = f"matmul_{matmul}"
                row["gflops"] = round(matmul_gflops, 2)
            elif name == "isa_products":
                row["gflops"] = round(times["gflops:isa_products"], 2)
            else:
                payload = {"name": name, "size": size, "mode": mode, "device": device, "channels": channels}
                row["allocator_peak_mb"] = round(_child("--memory-child", {**payload, "what": "allocator"}), 3)
                if device == "cpu":
                    count = processes if name in ("sa_fused", "isa_fused") else 1  # the targets' pair
                    rss = [_child("--memory-child", {**payload, "what": "rss"}) for _ in range(count)]
                    row["rss_peak_mb"] = round(statistics.median(rss), 1)
                    row["rss_peak_runs_mb"] = " ".join(f"{r:.0f}" for r in rss)
                module, _ = build_variant(name, torch.device("meta"), channels)
                row["gflops"] = round(count_gflops(module, (1, channels, *size)), 2)
            if "matmul" in times and name in ("isa_fused", "isa_products"):
                row["rate_vs_matmul"] = round(paired_rate(row["gflops"], times[name], matmul_gflops, times["matmul"]), 3)
            if name in kept:
                row["page_faults_mib_malloc_kept"] = _pages_mib(kept[f"faults:{name}"])
                if name != "matmul":
                    row["rate_vs_matmul_malloc_kept"] = round(
                        paired_rate(row["gflops"], kept[name], matmul_gflops, kept["matmul"]), 3)
            rows.append(row)
            log(f"  {row['size']} {mode:9s} {name:15s} " + ", ".join(
                f"{k} {v}" for k, v in row.items() if k.endswith(("_mb", "_ms")) and "runs" not in k))
    return rows


TARGETS = [
    # (label, numerator variant, denominator variant, column, mode, comparison, limit)
    ("ISA default / SA fused: peak memory, inference", "isa_fused", "sa_fused", "allocator_peak_mb", "inference", "<=", 1.0),
    ("ISA default / SA fused: peak memory, training step", "isa_fused", "sa_fused", "allocator_peak_mb", "training", "<=", 1.2),
    ("ISA default / ISA explicit: time, inference", "isa_fused", "isa_explicit", "time_median_ms", "inference", "<=", 1.0),
    ("ISA default / ISA explicit: time, training step", "isa_fused", "isa_explicit", "time_median_ms", "training", "<=", 1.0),
    ("einops ISA / Algorithm 1: time, inference", "isa_fused", "isa_algorithm1", "time_median_ms", "inference", "<=", 1.0),
    ("einops ISA / Algorithm 1: peak memory, inference", "isa_fused", "isa_algorithm1", "allocator_peak_mb", "inference", "<=", 1.0),
    ("einops ISA / Algorithm 1: time, training step", "isa_fused", "isa_algorithm1", "time_median_ms", "training", "<=", 1.0),
    ("einops ISA / Algorithm 1: peak memory, training step", "isa_fused", "isa_algorithm1", "allocator_peak_mb", "training", "<=", 1.0),
    ("SA fused / ISA default: time, training step (speed-up)", "sa_fused", "isa_fused", "time_median_ms", "training", ">=", 5.0),
]
#: Targets set at one size only (elsewhere their ratio is shown as information): the speed-up is
#: the issue's measurement at Fig. 4's size, and SA's quadratic cost makes it grow with the map.
TARGET_SIZES = {"SA fused / ISA default: time, training step (speed-up)": "128x128"}


def targets_table(rows: list[dict]):
    """The ratio table: every target of :data:`TARGETS` at every size where both variants were
    measured, plus ISA's throughput as a fraction of the 4096² matmul's; RSS ratios beside."""
    import pandas as pd

    frame = pd.DataFrame(rows).set_index(["size", "mode", "variant"])
    sizes = dict.fromkeys(frame.index.get_level_values("size"))  # in the order measured
    frame = frame.sort_index()  # (partial-key lookups on an unsorted index warn and run slowly)
    out = []
    for size in sizes:
        for label, num, den, column, mode, comparison, limit in TARGETS:
            if (size, mode, num) not in frame.index or (size, mode, den) not in frame.index:
                continue
            ratio = frame.loc[(size, mode, num), column] / frame.loc[(size, mode, den), column]
            entry = {"size": size, "target": label, "ratio": round(ratio, 3), "limit": f"{comparison} {limit}",
                     "met": bool(ratio <= limit if comparison == "<=" else ratio >= limit)}
            if TARGET_SIZES.get(label, size) != size:
                entry.update(limit="(information)", met=None)
            if column == "allocator_peak_mb" and "rss_peak_mb" in frame.columns:
                entry["rss ratio"] = round(frame.loc[(size, mode, num), "rss_peak_mb"]
                                           / frame.loc[(size, mode, den), "rss_peak_mb"], 3)
            out.append(entry)
        matmuls = [v for v in frame.loc[(size, "inference")].index if v.startswith("matmul_")]
        if matmuls and (size, "inference", "isa_fused") in frame.index:
            rate = lambda v: frame.loc[(size, "inference", v), "rate_vs_matmul"]  # noqa: E731
            ratio = rate("isa_fused")  # (paired within each repeat: measure_size)
            side = matmuls[0].split("_")[1]
            out.append({"size": size, "target": f"ISA default GFLOP/s / {side}² matmul GFLOP/s (inference)",
                        "ratio": round(ratio, 3), "limit": ">= 0.75", "met": bool(ratio >= 0.75)})
            if (size, "inference", "isa_products") in frame.index:
                # not a target: the ceiling of the row above, ISA's matrix products at their own sizes
                ceiling = rate("isa_products")
                out.append({"size": size, "target": f"ceiling: ISA's matrix products alone / {side}² matmul, GFLOP/s",
                            "ratio": round(ceiling, 3), "limit": "(information)", "met": None})
            kept = frame.loc[(size, "inference", "isa_fused")].get("rate_vs_matmul_malloc_kept")
            if kept is not None and not pd.isna(kept):
                out.append({"size": size, "target": f"with malloc keeping freed memory: ISA default / {side}² matmul, GFLOP/s",
                            "ratio": round(kept, 3), "limit": "(information)", "met": None})
    return pd.DataFrame(out)


def model_training(device: str, setting: str, steps: int, side: int = 192) -> dict:
    """Images/s and peak memory of OCNet (Base-OC with ISA) trained with SGD on random images.

    ``setting``: ``"small"`` (the CPU-scale backbone, 4 images of ``side``²) or ``"resnet101"``
    (the paper's: dilated ResNet-101, 2 crops of 769×769; CUDA only). The first step is not timed.
    """
    from ocnet_edu.model import OCNet

    dev = torch.device(device)
    torch.manual_seed(0)
    if setting == "small":
        model, batch, classes = OCNet("small", "base_oc_isa", num_classes=8), 4, 8
    else:
        model, batch, side, classes = OCNet("resnet101", "base_oc_isa", num_classes=19), 2, 769, 19
    model = model.to(dev).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch, 3, side, side, device=dev)
    labels = torch.randint(0, classes, (batch, side, side), device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model.loss(model(images), labels).backward()
        optimizer.step()

    if dev.type == "cuda":
        step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    else:
        peak = allocator_peak_mb(step)  # the first step, as in a fresh run
    times = []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"model": f"OCNet {setting} + base_oc_isa", "device": device, "batch": batch, "crop": f"{side}x{side}",
            "images_per_s": round(batch / seconds, 3), "step_s": round(seconds, 3), "peak_memory_mb": round(peak, 1),
            "steps_timed": steps, "torch": torch.__version__}


def build_parser(default_out: Path = DEFAULT_OUT) -> argparse.ArgumentParser:
    """The command line of ``benchmarks/performance.py`` (``--*-child``: internal)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", nargs="+", default=[f"{h}x{w}" for h, w in SIZES], help="HxW feature maps")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per variant")
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per RSS peak (median)")
    parser.add_argument("--model-steps", type=int, default=3, help="timed steps of the whole-model benchmark (0: skip)")
    parser.add_argument("--model-side", type=int, default=192, help="image side of the small whole-model benchmark")
    parser.add_argument("--channels", type=int, default=CHANNELS, help="C of [1, C, H, W] (paper: 512)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--matmul", type=int, default=MATMUL_SIDE, help="side of the reference matmul (CPU; 0: none)")
    parser.add_argument("--out", type=Path, default=default_out)
    for flag in ("--memory-child", "--time-child", "--model-child"):
        parser.add_argument(flag, help=argparse.SUPPRESS)
    return parser


def _run_child_flag(args: argparse.Namespace) -> bool:
    """Answer a ``--*-child`` request (one JSON line on stdout); False when there is none."""
    if args.memory_child:
        p = json.loads(args.memory_child)
        print(json.dumps(_measure_memory(p["name"], tuple(p["size"]), p["mode"], p["device"], p["what"],
                                         p["channels"])))
    elif args.time_child:
        p = json.loads(args.time_child)
        print(json.dumps(_measure_times(p["names"], tuple(p["size"]), p["mode"], p["device"], p["repeats"],
                                        p["matmul"], p["channels"])))
    elif args.model_child:
        p = json.loads(args.model_child)
        print(json.dumps(model_training(p["device"], p["setting"], p["steps"], p["side"])))
    else:
        return False
    return True


def main(argv: list[str] | None = None, default_out: Path = DEFAULT_OUT) -> None:
    """Measure every size, write the CSVs and print the ratio table against the targets."""
    import pandas as pd

    args = build_parser(default_out).parse_args(argv)
    if _run_child_flag(args):
        return
    sizes = [tuple(int(s) for s in text.split("x")) for text in args.sizes]
    print(f"[performance] {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.model_steps > 0:
        settings = ["small"] + (["resnet101"] if args.device == "cuda" else [])
        models = [_child("--model-child", {"device": args.device, "setting": s, "steps": args.model_steps,
                                           "side": args.model_side})
                  for s in settings]
        pd.DataFrame(models).to_csv(args.out / f"model_training_{args.device}.csv", index=False)
        print("\nWhole-model training throughput:")
        print(pd.DataFrame(models).to_string(index=False))
    rows = []
    for size in sizes:  # the CSVs are rewritten after each size, so that a long run keeps what it measured
        rows += measure_size(size, args.device, args.repeats, args.processes,
                             matmul=args.matmul if args.device == "cpu" else 0, channels=args.channels,
                             wanted=tuple(args.variants), log=lambda line: print(line, flush=True))
        raw = pd.DataFrame(rows)
        raw["channels"], raw["device"], raw["threads"], raw["torch"] = (
            args.channels, args.device, torch.get_num_threads(), torch.__version__)
        raw.to_csv(args.out / f"performance_{args.device}.csv", index=False)
        targets = targets_table(rows)
        targets.to_csv(args.out / f"performance_targets_{args.device}.csv", index=False)
    pd.set_option("display.width", 200)
    print("\nISA engine targets (ratios measured side by side in this run):")
    print(targets.to_string(index=False))
    print(f"\n[performance] load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
