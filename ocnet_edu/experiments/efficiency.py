"""Efficiency of the context modules (Table 4) and of SA vs ISA (Fig. 4), measured in one run.

Command line (from the repository root)::

    .venv/bin/python benchmarks/efficiency.py                  # the paper's sizes, on CUDA if present
    .venv/bin/python benchmarks/efficiency.py --device cpu     # force the CPU
    .venv/bin/python benchmarks/efficiency.py --side 32 --repeats 3   # a quick, small run

(``python -m ocnet_edu.experiments.efficiency`` takes the same arguments.) For every context
module name of :func:`ocnet_edu.heads.build_context_module` on the Table 4 input
``[1, 2048, side, side]`` (``side = 128`` in the paper, :data:`TABLE4_INPUT`), and for SA and ISA
alone on the Fig. 4 input ``[1, 512, side, side]``, it reports:

* GFLOPs from :func:`ocnet_edu.profiling.count_gflops` on ``meta`` tensors (2 FLOPs per
  multiply-add; element-wise work is not counted);
* the peak memory of one inference forward pass: on CUDA ``torch.cuda.max_memory_allocated``
  above what the module and input already hold; on the CPU the peak resident set size of a fresh
  subprocess above its level just before the forward pass;
* the median, min and max time over ``--repeats`` timed forward passes after ``--warmup``.

Each measurement runs in its own fresh process (``python -m ocnet_edu.experiments.efficiency
--child ...``), so one module's allocations cannot hide another's. SA and ISA are measured twice:
with the explicit softmax path (what the paper measured, the relation matrices materialised) and
with PyTorch's fused ``scaled_dot_product_attention`` (what a user would pick today). The einops
ISA is also timed against a line-by-line transcription of Algorithm 1
(``ocnet_edu.nn.reference.algorithm1_isa``).

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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ocnet_edu.heads import CONTEXT_MODULE_NAMES, build_context_module
from ocnet_edu.profiling import count_gflops

__all__ = ["PAPER_FIG4", "Result", "Spec", "TABLE4_INPUT", "TABLE4_NOTES", "all_specs", "build", "fig4_summary",
           "main", "measure", "table4_side_by_side"]

DEFAULT_OUT = Path("benchmarks") / "results"
"""Where the CSV files go (relative to the working directory: the repository root)."""

#: the input of Table 4: one 2048-channel, 128×128 map (a 1024×1024 crop at output stride 8)
TABLE4_INPUT = (1, 2048, 128, 128)

#: why a module's count differs from Table 4 (names without an entry agree within 5%)
TABLE4_NOTES = {
    "asp_oc_sa": (
        "ours ~789 vs 656: a dense SA over all 128·128 positions costs (HW)²·(d_k + d_v)·2 ≈ 137 GFLOPs "
        "on its own, and 492 (ASPP) + 155 (the 3×3 conv 2048→256 of the OCP branch) leaves only ~9. "
        "The authors' OCNet.pytorch (oc_module/asp_oc_block.py) runs this SA on a 2× max-pooled map "
        "(sizes=[2]), which the paper does not state; with ocp_downsample=2 (2× average pooling) ours is 656."
    ),
    "cgnl": (
        "the CGNL head is not specified by either paper; the block itself is linear in H·W (~13 GFLOPs), so "
        "the head is dominated by its convolutions: 3×3 reduction (309) + 3×3 conv after the block (77), "
        "~400 in total (0.97×). Without the conv after the block it would be ~323 (0.78×)."
    ),
}

PAPER_FIG4 = {"memory_ratio": 0.102, "gflops_ratio": 0.246, "speedup": 2.0}
"""Fig. 4 of the paper: ISA relative to SA at ``[1, 512, 128, 128]`` (memory, GFLOPs, speed-up)."""

ISA_GROUPS = (8, 8)
"""``(P_h, P_w)`` of the measured ISA (the paper's default)."""


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
    """One row of ``efficiency_<device>.csv``: what was measured and its cost."""

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
    """The module ``spec`` describes, in eval mode, with its attention path set by ``spec.fused``."""
    from ocnet_edu import InterlacedSparseSelfAttention, SelfAttention

    if spec.kind == "context":
        module = build_context_module(spec.name, in_channels=spec.channels)
    elif spec.kind == "sa":
        module = SelfAttention(spec.channels)
    else:
        module = InterlacedSparseSelfAttention(spec.channels, groups=ISA_GROUPS)
    for m in module.modules():
        if hasattr(m, "fused"):
            m.fused = spec.fused
    return module.eval()


def forward_fn(spec: Spec, module: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """What one forward pass of ``spec`` calls: the module, or Algorithm 1 with its stages."""
    if spec.kind != "isa_algorithm1":
        return module
    from ocnet_edu.nn.reference import algorithm1_isa

    return lambda x: algorithm1_isa(x, module.stage("global"), module.stage("local"), *ISA_GROUPS)


def _status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status``."""
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


def _synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for the device's queued work (CUDA), or does nothing (CPU)."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def _peak_memory_mb(run: Callable, x: torch.Tensor) -> float:
    """MiB above the current level at the peak of one ``run(x)`` (CUDA allocator or process RSS).

    On CUDA one pass runs first, unmeasured: the first matrix product allocates cuBLAS's
    workspace (about 176 MiB on recent GPUs) and keeps it, which would otherwise be charged to
    whichever module runs first, and most to the one with the most small products (ISA). The
    measured pass then counts only what the module itself allocates. On the CPU the first pass of
    a fresh process is the one measured (peak RSS), so that freed memory reused by the allocator
    does not hide the peak.
    """
    if x.device.type == "cuda":
        run(x)  # warm-up: library workspaces, not the module's memory
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run(x)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    before = reset_peak_rss()
    run(x)
    return (peak_rss() - before) / 1024


def measure_here(spec: Spec, device: str, warmup: int, repeats: int) -> dict:
    """Run inside the fresh subprocess: peak memory of one forward pass, then timings."""
    dev = torch.device(device)
    module = build(spec).to(dev)
    run = forward_fn(spec, module)
    x = torch.randn(1, spec.channels, spec.side, spec.side, device=dev)
    sync = _synchronizer(dev)
    with torch.inference_mode():
        peak = _peak_memory_mb(run, x)
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
    dev = torch.device(device)
    spec = Spec("isa", "isa", "isa", 512, side, fused)
    module = build(spec).to(dev)
    x = torch.randn(1, 512, side, side, device=dev)
    sync = _synchronizer(dev)
    algorithm1 = forward_fn(Spec("isa_algorithm1", "isa_algorithm1", "isa", 512, side, fused), module)
    runs = {"einops": lambda: module(x), "algorithm1": lambda: algorithm1(x)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    with torch.inference_mode():
        for _ in range(warmup):
            for run in runs.values():
                run()
        for repeat in range(repeats):  # ABBA order: a slow drift of the machine hits both alike
            for name in order if repeat % 2 == 0 else order[::-1]:
                sync()
                start = time.perf_counter()
                runs[name]()
                sync()
                times[name].append((time.perf_counter() - start) * 1e3)
    paired = [a / b for a, b in zip(times["einops"], times["algorithm1"])]
    result = {name: statistics.median(t) for name, t in times.items()}
    result["paired_ratio"] = statistics.median(paired)
    return result


def _run_child(flag: str, payload: dict, device: str, warmup: int, repeats: int, what: str) -> dict:
    """Run this module in a fresh Python process with ``flag payload`` and return its JSON answer."""
    command = [sys.executable, "-m", "ocnet_edu.experiments.efficiency", flag, json.dumps(payload), "--device", device, "--warmup", str(warmup), "--repeats", str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def interleaved_ratio(side: int, fused: bool, device: str, warmup: int, repeats: int) -> dict:
    """:func:`interleaved_ratio_here`, in a fresh process."""
    return _run_child("--ratio-child", {"side": side, "fused": fused}, device, warmup, repeats,
                      "timing einops vs Algorithm 1")


def measure(spec: Spec, device: str, warmup: int, repeats: int) -> Result:
    """GFLOPs here (on meta), memory and time in a fresh subprocess."""
    gflops = count_gflops(build(spec), (1, spec.channels, spec.side, spec.side))
    child = _run_child("--child", asdict(spec), device, warmup, repeats, f"measuring {spec.label}")
    times = child["times_ms"]
    return Result(spec.label, spec.kind, spec.name, spec.fused, f"1x{spec.channels}x{spec.side}x{spec.side}",
                  round(gflops, 2), round(child["peak_memory_mb"], 1), round(statistics.median(times), 2),
                  round(min(times), 2), round(max(times), 2), device)


def all_specs(side: int, names: list[str]) -> list[Spec]:
    """Every measurement of one run: the context modules ``names`` (Table 4), then SA, ISA and
    Algorithm 1 with the explicit and the fused attention path (Fig. 4)."""
    specs = [Spec(f"{name}", "context", name, TABLE4_INPUT[1], side, False) for name in names]
    for fused in (False, True):
        tag = "fused" if fused else "explicit"
        specs += [Spec(f"sa_{tag}", "sa", "sa", 512, side, fused), Spec(f"isa_{tag}", "isa", "isa", 512, side, fused),
                  Spec(f"isa_algorithm1_{tag}", "isa_algorithm1", "isa", 512, side, fused)]
    return specs


def table4_side_by_side(results: list[Result]):
    """The paper's Table 4 beside our context-module rows, each column also as a ratio to Base-OC (SA)."""
    import pandas as pd

    from ocnet_edu.paper import load_table

    paper = load_table(4)
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
    """Fig. 4's ratios (memory, GFLOPs, speed-up of ISA against SA) for both attention paths,
    the einops ISA against Algorithm 1, and the paper's row."""
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


def build_parser(default_out: Path = DEFAULT_OUT) -> argparse.ArgumentParser:
    """The command line of ``benchmarks/efficiency.py`` (``--child``/``--ratio-child``: internal)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--side", type=int, default=128, help="height = width of the feature map (paper: 128)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--names", nargs="*", default=list(CONTEXT_MODULE_NAMES), help="context modules to measure")
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--ratio-child", help=argparse.SUPPRESS)
    return parser


def _machine(device: str) -> str:
    """The device's name (CUDA) or the CPU's, with the thread count."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def write_results(args: argparse.Namespace, results: list[Result]) -> None:
    """Write (and print) the raw rows, Table 4 beside the paper's and the Fig. 4 summary."""
    import pandas as pd

    args.out.mkdir(parents=True, exist_ok=True)
    raw = pd.DataFrame([asdict(r) for r in results])
    machine = _machine(args.device)
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


def main(argv: list[str] | None = None, default_out: Path = DEFAULT_OUT) -> None:
    """Measure every spec of :func:`all_specs` (or, with ``--child``, one of them) and write the CSVs."""
    args = build_parser(default_out).parse_args(argv)
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
    results = [measure(spec, args.device, args.warmup, args.repeats)
               for spec in tqdm(specs, desc=f"measuring on {args.device}", unit="module")]
    write_results(args, results)


if __name__ == "__main__":
    main()
