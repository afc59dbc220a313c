"""Efficiency of the context modules (Table 4) and of SA vs ISA (Fig. 4), measured in one run.

Usage (from the repository root)::

    .venv/bin/python benchmarks/efficiency.py                  # the paper's sizes, on CUDA if present
    .venv/bin/python benchmarks/efficiency.py --device cpu     # force the CPU
    .venv/bin/python benchmarks/efficiency.py --side 32 --repeats 3   # a quick, small run

For every context module name of :func:`ocnet_edu.heads.build_context_module` on the Table 4
input ``[1, 2048, side, side]`` (``side = 128`` in the paper), and for SA and ISA alone on the
Fig. 4 input ``[1, 512, side, side]``, it reports:

* GFLOPs from :class:`torch.utils.flop_counter.FlopCounterMode` on ``meta`` tensors (2 FLOPs per
  multiply-add; element-wise work is not counted);
* the peak memory of one inference forward pass: on CUDA ``torch.cuda.max_memory_allocated``
  above what the module and input already hold; on the CPU the peak resident set size of a fresh
  subprocess above its level just before the forward pass;
* the median, min and max time over ``--repeats`` timed forward passes after ``--warmup``.

Each measurement runs in its own fresh subprocess, so one module's allocations cannot hide
another's. SA and ISA are measured twice: with the explicit softmax path (what the paper
measured, the relation matrices materialised) and with PyTorch's fused
``scaled_dot_product_attention`` (what a user would pick today). The einops ISA is also timed
against a line-by-line transcription of Algorithm 1 (``ocnet_edu.nn.reference.algorithm1_isa``).

Outputs (in ``--out``, default ``benchmarks/results``): ``efficiency_<device>.csv`` with one row
per measurement, and ``table4_<device>.csv`` with the paper's Table 4 beside ours, with every
column also given as a ratio to Base-OC (SA) so that CPU and GPU runs can be compared.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocnet_edu.heads import CONTEXT_MODULE_NAMES, build_context_module  # noqa: E402
from ocnet_edu.heads.flops import count_gflops  # noqa: E402

PAPER_FIG4 = {"memory_ratio": 0.102, "gflops_ratio": 0.246, "speedup": 2.0}  # Fig. 4: ISA relative to SA


@dataclass
class Spec:
    """One thing to measure: a context module name, or ``sa``/``isa``/``isa_algorithm1``."""

    label: str
    kind: str  # "context" | "sa" | "isa" | "isa_algorithm1"
    name: str
    channels: int
    side: int
    fused: bool


@dataclass
class Result:
    label: str
    kind: str
    name: str
    fused: bool
    input_shape: str
    gflops: float
    peak_memory_mb: float
    time_median_ms: float
    time_min_ms: float
    time_max_ms: float
    device: str


def build(spec: Spec) -> torch.nn.Module:
    from ocnet_edu import InterlacedSparseSelfAttention, SelfAttention

    if spec.kind == "context":
        module = build_context_module(spec.name, in_channels=spec.channels)
    elif spec.kind == "sa":
        module = SelfAttention(spec.channels)
    else:
        module = InterlacedSparseSelfAttention(spec.channels, groups=(8, 8))
    for m in module.modules():
        if hasattr(m, "fused"):
            m.fused = spec.fused
    return module.eval()


def forward_fn(spec: Spec, module: torch.nn.Module):
    if spec.kind != "isa_algorithm1":
        return module
    from ocnet_edu.nn.reference import algorithm1_isa

    return lambda x: algorithm1_isa(x, module.stage("global"), module.stage("local"), 8, 8)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS and return that RSS (KiB).

    Linux only: writing 5 to /proc/self/clear_refs resets VmHWM. Without it the peak would be
    that of the whole process life (imports, module construction), not of the forward pass.
    """
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def peak_rss() -> int:
    """Peak RSS (KiB) since the last :func:`reset_peak_rss`."""
    return _status_kib("VmHWM")


def measure_here(spec: Spec, device: str, warmup: int, repeats: int) -> dict:
    """Run inside the fresh subprocess: peak memory of one forward pass, then timings."""
    dev = torch.device(device)
    module = build(spec).to(dev)
    run = forward_fn(spec, module)
    x = torch.randn(1, spec.channels, spec.side, spec.side, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            run(x)
            torch.cuda.synchronize()
            peak = (torch.cuda.max_memory_allocated() - before) / 2**20
        else:
            before = reset_peak_rss()
            run(x)
            peak = (peak_rss() - before) / 1024
        for _ in range(max(0, warmup - 1)):
            run(x)
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(x)
            sync()
            times.append((time.perf_counter() - start) * 1e3)
    return {"peak_memory_mb": peak, "times_ms": times}


def interleaved_ratio_here(side: int, fused: bool, device: str, warmup: int, repeats: int) -> dict:
    """Time the einops ISA and the Algorithm 1 transcription alternately (ABBA), in one process,
    so that both see the same machine load; returns both medians (ms) and the median of the
    per-repeat ratios einops / Algorithm 1."""
    from ocnet_edu.nn.reference import algorithm1_isa

    dev = torch.device(device)
    spec = Spec("isa", "isa", "isa", 512, side, fused)
    module = build(spec).to(dev)
    x = torch.randn(1, 512, side, side, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    runs = {"einops": lambda: module(x),
            "algorithm1": lambda: algorithm1_isa(x, module.stage("global"), module.stage("local"), 8, 8)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)

    def timed(name: str) -> None:
        sync()
        start = time.perf_counter()
        runs[name]()
        sync()
        times[name].append((time.perf_counter() - start) * 1e3)

    with torch.inference_mode():
        for _ in range(warmup):
            for run in runs.values():
                run()
        for repeat in range(repeats):  # ABBA order: a slow drift of the machine hits both alike
            for name in order if repeat % 2 == 0 else order[::-1]:
                timed(name)
    paired = [a / b for a, b in zip(times["einops"], times["algorithm1"])]
    result = {name: statistics.median(t) for name, t in times.items()}
    result["paired_ratio"] = statistics.median(paired)
    return result


def interleaved_ratio(side: int, fused: bool, device: str, warmup: int, repeats: int) -> dict:
    command = [sys.executable, __file__, "--ratio-child", json.dumps({"side": side, "fused": fused}), "--device", device,
               "--warmup", str(warmup), "--repeats", str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"timing einops vs Algorithm 1 failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(spec: Spec, device: str, warmup: int, repeats: int) -> Result:
    """GFLOPs here (on meta), memory and time in a fresh subprocess."""
    gflops = count_gflops(build(spec), (1, spec.channels, spec.side, spec.side))
    command = [sys.executable, __file__, "--child", json.dumps(asdict(spec)), "--device", device,
               "--warmup", str(warmup), "--repeats", str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {spec.label} failed:\n{done.stderr[-3000:]}")
    child = json.loads(done.stdout.strip().splitlines()[-1])
    times = child["times_ms"]
    return Result(spec.label, spec.kind, spec.name, spec.fused, f"1x{spec.channels}x{spec.side}x{spec.side}",
                  round(gflops, 2), round(child["peak_memory_mb"], 1), round(statistics.median(times), 2),
                  round(min(times), 2), round(max(times), 2), device)


def all_specs(side: int, names: list[str]) -> list[Spec]:
    specs = [Spec(f"{name}", "context", name, 2048, side, False) for name in names]
    for fused in (False, True):
        tag = "fused" if fused else "explicit"
        specs += [Spec(f"sa_{tag}", "sa", "sa", 512, side, fused), Spec(f"isa_{tag}", "isa", "isa", 512, side, fused),
                  Spec(f"isa_algorithm1_{tag}", "isa_algorithm1", "isa", 512, side, fused)]
    return specs


def table4_side_by_side(results: list[Result]):
    import pandas as pd

    paper = pd.read_csv(ROOT / "data" / "paper" / "table4.csv")
    ours = pd.DataFrame([asdict(r) for r in results if r.kind == "context"])
    merged = paper.merge(ours, left_on="context_module", right_on="name", how="outer")
    base = merged.set_index("context_module").loc["base_oc_sa"]
    merged["gflops_ours_over_paper"] = (merged["gflops_y"] / merged["gflops_x"]).round(3)
    for paper_col, ours_col, label in [("memory_mb", "peak_memory_mb", "memory"), ("time_ms", "time_median_ms", "time")]:
        merged[f"paper_{label}_vs_base_oc_sa"] = (merged[paper_col] / base[paper_col]).round(3)
        merged[f"ours_{label}_vs_base_oc_sa"] = (merged[ours_col] / base[ours_col]).round(3)
    merged = merged.rename(columns={"gflops_x": "paper_gflops", "gflops_y": "ours_gflops", "memory_mb": "paper_memory_mb",
                                    "time_ms": "paper_time_ms", "peak_memory_mb": "ours_memory_mb",
                                    "time_median_ms": "ours_time_ms"})
    merged["context_module"] = merged["context_module"].fillna(merged["name"])
    columns = ["context_module", "paper_gflops", "ours_gflops", "gflops_ours_over_paper", "paper_memory_mb",
               "ours_memory_mb", "paper_memory_vs_base_oc_sa", "ours_memory_vs_base_oc_sa", "paper_time_ms",
               "ours_time_ms", "time_min_ms", "time_max_ms", "paper_time_vs_base_oc_sa", "ours_time_vs_base_oc_sa"]
    return merged[columns]


def fig4_summary(results: list[Result], ratios: dict[str, dict]):
    import pandas as pd

    by = {r.label: r for r in results}
    rows = []
    for tag in ("explicit", "fused"):
        sa, isa, alg1 = by[f"sa_{tag}"], by[f"isa_{tag}"], by[f"isa_algorithm1_{tag}"]
        rows.append({
            "attention path": tag,
            "ISA/SA memory": round(isa.peak_memory_mb / sa.peak_memory_mb, 3),
            "ISA/SA GFLOPs": round(isa.gflops / sa.gflops, 3),
            "SA/ISA time (speed-up)": round(sa.time_median_ms / isa.time_median_ms, 2),
            "einops ISA / Algorithm 1 time": round(isa.time_median_ms / alg1.time_median_ms, 3),
            "einops ISA / Algorithm 1 time (interleaved)": round(ratios[tag]["paired_ratio"], 3),
        })
    rows.append({"attention path": "paper (Fig. 4)", "ISA/SA memory": PAPER_FIG4["memory_ratio"],
                 "ISA/SA GFLOPs": PAPER_FIG4["gflops_ratio"], "SA/ISA time (speed-up)": PAPER_FIG4["speedup"],
                 "einops ISA / Algorithm 1 time": float("nan"),
                 "einops ISA / Algorithm 1 time (interleaved)": float("nan")})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--side", type=int, default=128, help="height = width of the feature map (paper: 128)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--names", nargs="*", default=list(CONTEXT_MODULE_NAMES), help="context modules to measure")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--ratio-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure_here(Spec(**json.loads(args.child)), args.device, args.warmup, args.repeats)))
        return
    if args.ratio_child:
        options = json.loads(args.ratio_child)
        print(json.dumps(interleaved_ratio_here(options["side"], options["fused"], args.device, args.warmup,
                                                args.repeats)))
        return
    from tqdm import tqdm

    specs = all_specs(args.side, args.names)
    results = []
    for spec in tqdm(specs, desc=f"measuring on {args.device}", unit="module"):
        results.append(measure(spec, args.device, args.warmup, args.repeats))
    import pandas as pd

    args.out.mkdir(parents=True, exist_ok=True)
    raw = pd.DataFrame([asdict(r) for r in results])
    machine = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    raw["machine"] = machine
    raw["torch"] = torch.__version__
    raw.to_csv(args.out / f"efficiency_{args.device}.csv", index=False)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    if "base_oc_sa" in args.names:
        side_by_side = table4_side_by_side(results)
        side_by_side.to_csv(args.out / f"table4_{args.device}.csv", index=False)
        print(f"\nTable 4 at [1, 2048, {args.side}, {args.side}] on {machine} (paper: V100, {args.side == 128 and 'same size' or 'size 128'})")
        print(side_by_side.to_string(index=False))
    ratios = {tag: interleaved_ratio(args.side, tag == "fused", args.device, args.warmup, max(args.repeats, 30))
              for tag in ("explicit", "fused")}
    summary = fig4_summary(results, ratios)
    summary.to_csv(args.out / f"fig4_{args.device}.csv", index=False)
    print(f"\nFig. 4: SA vs ISA at [1, 512, {args.side}, {args.side}]")
    print(summary.to_string(index=False))


if __name__ == "__main__":
    main()
