"""Proxy versions of the paper's ablations (Tables 1, 2, 3, 5) on the digit-scenes benchmark.

Command line (from the repository root)::

    python scripts/ablations.py                       # Tables 1 2 3 5, seeds 0 1 2
    python scripts/ablations.py --tables 2 --seeds 0 --iters 100
    python scripts/ablations.py --dry-run             # 2 iterations per run: a smoke test
    python scripts/ablations.py --jobs 2              # two runs at a time, one core each

(``python -m ocnet_edu.experiments.ablations`` takes the same arguments.) Every run trains the
digit-cards model (:func:`ocnet_edu.zoo.digits.load_digits_config`, ``configs/digits.yaml``) with
one context module, with the library's own stack (:func:`ocnet_edu.engine.train.train`), for the
same number of iterations, batch size and learning rate, and scores it on the validation scenes
(unseen handwriting) with :func:`ocnet_edu.engine.evaluate.evaluate_model`. Each run appends one
row to the CSV (default ``benchmarks/results/ablations.csv``); a run whose ``(table, method, seed,
settings)`` is already there is skipped, so an interrupted sweep continues where it stopped. A
configuration that appears in several tables (the baseline, Base-OC with ISA, ...) is trained once
per seed and its row copied to the other tables. These numbers are a proxy for the paper's
(Cityscapes/ADE20K mIoU with ResNet-101): they compare the modules with each other on a task that
needs object context, at CPU scale. The table ``rf`` (not in the paper) trains the no-context
baseline with larger receptive fields: accuracy against receptive field. The table ``control``
(not in the paper) trains RCCA's head with its attention switched off (``recurrence=0``): what its
extra convolutions alone are worth.

Scaling to the small feature map. The benchmark's feature map is 12×12 (96×96 scenes, output
stride 8); the paper's Cityscapes map is 64×128 (512×1024 crops). Sizes defined in feature pixels
are scaled by the ratio of the short sides, 12/64:

* ASPP / ASP-OC dilation rates ``(12, 24, 36)`` → ``round(r · 12/64)`` = ``(2, 5, 7)`` (rounding
  half up): the outer taps still land inside the map for central pixels, as ``36`` does on 64×128.
* ISA group counts ``P`` of Table 1: the paper sweeps ``{4, 8, 16}`` around its default 8; the
  proxy sweeps ``{1, 2, 4}`` around the benchmark's default 2 (``digits.yaml``), keeping
  the ratios to the default. ``P = 1`` is degenerate: the global stage is then dense attention
  over the whole map and the local stage attends within single pixels.
* Pyramid-OC and PPM keep the paper's bins ``(1, 2, 3, 6)``; all divide 12 (elsewhere the
  regions are uneven, see :func:`ocnet_edu.heads.region_sizes`).
* Every head uses ``channels = 64`` (the paper: 512, ASP-OC/ASPP 256) and its default key/value
  channel ratios; CPU-sized, the same for every method.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocnet_edu.zoo.digits import load_digits_config

__all__ = ["CHANNELS", "COLUMNS", "DEFAULT_CSV", "RF_BACKBONES", "Run", "TABLES", "build_config", "git_commit",
           "main", "planned", "read_rows", "scaled_dilations", "sweep", "table_runs", "train_and_score"]

DEFAULT_CSV = Path("benchmarks") / "results" / "ablations.csv"
"""Where the sweep appends its rows (relative to the working directory: the repository root)."""
COLUMNS = ("table", "method", "context_module", "options", "seed", "miou", "pixel_acc", "train_seconds",
           "commit", "settings")
TABLES = ("1", "2", "3", "5", "rf", "control")

CHANNELS = 64
"""Channels of every context module (CPU-sized; the paper uses 512, or 256 for ASPP/ASP-OC)."""
PAPER_FEATURE_SIDE = 64
"""Short side of the paper's Cityscapes feature map (512×1024 crop, output stride 8)."""
PAPER_DILATIONS = (12, 24, 36)
"""ASPP / ASP-OC dilation rates of the paper (Sec. 3.3)."""
PAPER_TO_PROXY_GROUPS = {4: 1, 8: 2, 16: 4}
"""ISA group counts of Table 1 → those used on the 12×12 map (ratios kept, see module docstring)."""
TABLE1_GROUPS = ((4, 4), (4, 8), (8, 4), (8, 8), (8, 16), (16, 8), (16, 16))
"""The ``(P_h, P_w)`` of Table 1's Global+Local rows."""

RowKey = tuple[str, str, str, str]


def scaled_dilations(feature_side: int, rates: Sequence[int] = PAPER_DILATIONS) -> list[int]:
    """The paper's dilation ``rates`` scaled from a 64-pixel to a ``feature_side``-pixel map
    (rounded half up, at least 1): ``scaled_dilations(8) == [2, 3, 5]``."""
    return [max(1, int(r * feature_side / PAPER_FEATURE_SIDE + 0.5)) for r in rates]


@dataclass(frozen=True)
class Run:
    """One row of one table: a context module with its options (and backbone options)."""

    table: str
    method: str
    context: str
    options: dict[str, Any] = field(default_factory=dict)
    backbone_options: dict[str, Any] | None = None  # None: those of the base config

    def options_json(self) -> str:
        """The options (and backbone options, if any) as the JSON string of the CSV's ``options``."""
        data: dict[str, Any] = dict(self.options)
        if self.backbone_options is not None:
            data["backbone_options"] = self.backbone_options
        return json.dumps(data, sort_keys=True)


RF_BACKBONES = (
    {"width": 8, "blocks": [1, 1, 1], "head_kernel": 1},
    {"width": 8, "blocks": [1, 1, 1], "head_kernel": 3},
    {"width": 8, "blocks": [2, 2, 2], "head_kernel": 3},
    {"width": 8, "blocks": [3, 3, 3], "head_kernel": 3},
)
"""Backbones of the ``rf`` table: receptive fields 19, 51, 79 and 107 pixels (cards are 40)."""


def base_feature_side() -> int:
    """Short side of the base config's feature map (scenes at output stride 8)."""
    return -(-min(load_digits_config().data.crop_size) // 8)


def _table1_runs(base: dict[str, Any], isa: dict[str, Any]) -> list[Run]:
    """Table 1: the baseline, ISA with every ``(P_h, P_w)`` (scaled), the stage orders."""
    runs = [Run("1", "none", "none", base)]
    for p_h, p_w in TABLE1_GROUPS:
        groups = [PAPER_TO_PROXY_GROUPS[p_h], PAPER_TO_PROXY_GROUPS[p_w]]
        runs.append(Run("1", f"global+local {p_h}x{p_w}", "base_oc_isa", {**base, "groups": groups}))
    runs.append(Run("1", "local+global 8x8", "base_oc_isa", {**isa, "stages": ["local", "global"]}))
    runs.append(Run("1", "global only 8x8", "base_oc_isa", {**isa, "stages": ["global"]}))
    runs.append(Run("1", "local only 8x8", "base_oc_isa", {**isa, "stages": ["local"]}))
    return runs


def _rf_runs(base: dict[str, Any]) -> list[Run]:
    """The ``rf`` table: the no-context baseline on the backbones of :data:`RF_BACKBONES`."""
    from ocnet_edu.backbones.small import SmallBackbone

    return [Run("rf", f"none rf {SmallBackbone(**options).receptive_field()}", "none", base, dict(options))
            for options in RF_BACKBONES]


def table_runs(table: str, feature_side: int | None = None) -> list[Run]:
    """The runs of one proxy table (see the module docstring for the sizes).

    Args:
        table: one of :data:`TABLES`.
        feature_side: short side of the benchmark's feature map (scales the ASPP dilations);
            default: that of the digits config.
    """
    base = {"channels": CHANNELS}
    isa = {**base, "groups": [2, 2]}  # the proxy of the paper's default P_h = P_w = 8
    dilations = scaled_dilations(base_feature_side() if feature_side is None else feature_side)
    if table == "1":
        return _table1_runs(base, isa)
    if table == "2":
        return [Run("2", "none", "none", base), Run("2", "ppm", "ppm", base),
                Run("2", "aspp", "aspp", {**base, "dilations": dilations}),
                Run("2", "base_oc_sa", "base_oc_sa", base), Run("2", "base_oc_isa", "base_oc_isa", isa)]
    if table == "3":
        return [Run("3", name, name, base) for name in ("sa_2x", "rcca", "cgnl", "efficient_attention")] + [
            Run("3", "base_oc_isa", "base_oc_isa", isa)]
    if table == "5":
        return [Run("5", "none", "none", base),
                Run("5", "base_oc_sa", "base_oc_sa", base), Run("5", "base_oc_isa", "base_oc_isa", isa),
                Run("5", "pyramid_oc_sa", "pyramid_oc_sa", base), Run("5", "pyramid_oc_isa", "pyramid_oc_isa", isa),
                Run("5", "asp_oc_sa", "asp_oc_sa", {**base, "dilations": dilations}),
                Run("5", "asp_oc_isa", "asp_oc_isa", {**isa, "dilations": dilations})]
    if table == "rf":
        return _rf_runs(base)
    if table == "control":
        # RCCA's head has two more 3x3 convolutions than Base-OC; without attention it shows
        # what they alone are worth on this benchmark
        return [Run("control", "rcca without attention", "rcca", {**base, "recurrence": 0})]
    raise ValueError(f"unknown table {table!r}; choose from {', '.join(TABLES)}")


def git_commit(cwd: str | Path | None = None) -> str:
    """The commit of the checkout that holds ``cwd`` (default: this package's folder), with
    ``+dirty`` if the tree has changes, or ``unknown`` (e.g. a package installed from a wheel)."""
    cwd = Path(__file__).resolve().parent if cwd is None else cwd
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def build_config(run: Run, seed: int, iters: int, dry_run: bool, out_dir: Path):
    """The base config with this run's module, options, seed, budget and output directory.

    The option dicts replace the base config's (so, e.g., its ``groups`` never reach a module
    without groups); they are set on the config object rather than written as ``key=value``
    overrides so that their values keep their Python types (tuples stay tuples).
    """
    overrides = [
        f"model.context={run.context}",
        f"runtime.seed={seed}",
        f"schedule.max_iters={iters}",
        f"schedule.checkpoint_every={iters}",
        f"runtime.out_dir={out_dir}",
    ]
    if dry_run:
        overrides += ["data.synthetic_length=8", "schedule.batch_size=4"]
    cfg = load_digits_config(overrides)
    cfg.model.context_options = dict(run.options)
    if run.backbone_options is not None:
        cfg.model.backbone_options = dict(run.backbone_options)
    return cfg


def settings_of(cfg) -> str:
    """The budget and data settings that make runs comparable, as a JSON string (part of the key
    a row is resumed by)."""
    return json.dumps({
        "iters": cfg.schedule.max_iters, "batch": cfg.schedule.batch_size, "lr": cfg.optim.lr,
        "weight_decay": cfg.optim.weight_decay, "crop": list(cfg.data.crop_size),
        "scenes": cfg.data.synthetic_length, "size": list(cfg.data.synthetic_size),
        "backbone": cfg.model.backbone, "backbone_options": cfg.model.backbone_options,
    }, sort_keys=True)


def train_and_score(run: Run, seed: int, iters: int, dry_run: bool, commit: str = "unknown") -> dict[str, Any]:
    """Train one run in a temporary directory, score it on the validation scenes, return the row.

    ``commit`` is the checkout's state when the sweep started (taken once, so that editing the
    tree while a long sweep runs does not change what the rows say made them)."""
    import torch

    from ocnet_edu.engine.evaluate import evaluate_model, load_model
    from ocnet_edu.engine.builders import build_eval_dataset
    from ocnet_edu.engine.train import FINAL, train

    with tempfile.TemporaryDirectory(prefix="ocnet_ablation_") as tmp:
        cfg = build_config(run, seed, iters, dry_run, Path(tmp))
        start = time.perf_counter()
        train(cfg, progress=False)
        seconds = time.perf_counter() - start
        model = load_model(cfg, Path(tmp) / FINAL)
    dataset = build_eval_dataset(cfg)
    scores = evaluate_model(model, dataset, cfg.model.num_classes, torch.device("cpu"), boundary_tolerances=(3,))
    return {
        "table": run.table, "method": run.method, "context_module": run.context, "options": run.options_json(),
        "seed": seed, "miou": f"{scores['miou']:.4f}", "pixel_acc": f"{scores['pixel_acc']:.4f}",
        "train_seconds": f"{seconds:.1f}", "commit": commit, "settings": settings_of(cfg),
    }


def share_key(context: str, options: dict[str, Any], seed: int | str, settings: str) -> RowKey:
    """What makes two rows the same training run: module, its options, seed and settings (which
    include the backbone)."""
    return context, json.dumps(options, sort_keys=True), str(seed), settings


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows already in ``path`` (none if it does not exist)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path} has columns {reader.fieldnames}, expected {list(COLUMNS)}; "
                             "write to another --csv")
        return list(reader)


def row_share_key(row: dict[str, str]) -> RowKey:
    """:func:`share_key` of a row read back from the CSV."""
    options = json.loads(row["options"])
    options.pop("backbone_options", None)  # already part of the settings
    return share_key(row["context_module"], options, row["seed"], row["settings"])


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one row (with the header first if the file is new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def planned(tables: Sequence[str], seeds: Sequence[int]) -> Iterator[tuple[Run, int]]:
    """Every ``(run, seed)`` of ``tables`` (seed-major inside a table, so that a partial sweep has
    every method at seed 0 first)."""
    for table in tables:
        for seed in seeds:
            for run in table_runs(table):
                yield run, seed


@dataclass
class Plan:
    """The rows still missing, grouped by the training run that produces them."""

    waiting: dict[RowKey, list[Run]] = field(default_factory=dict)  # training run -> its rows
    first: dict[RowKey, tuple[Run, int]] = field(default_factory=dict)  # training run -> what to train
    planned_rows: int = 0  # rows of the whole plan, done or not


def plan_missing(tables: Sequence[str], seeds: Sequence[int], iters: int, dry_run: bool,
                 rows: list[dict[str, str]]) -> Plan:
    """The rows of ``tables`` × ``seeds`` not yet in ``rows``, keyed by their training run."""
    done = {(r["table"], r["method"], r["seed"], r["settings"]) for r in rows}
    plan = Plan()
    for run, seed in planned(tables, seeds):
        plan.planned_rows += 1
        # the settings of this run, computed the same way as when its row was written
        settings = settings_of(build_config(run, seed, iters, dry_run, Path("unused")))
        if (run.table, run.method, str(seed), settings) in done:
            continue
        key = share_key(run.context, run.options, seed, settings)
        plan.waiting.setdefault(key, []).append(run)
        plan.first.setdefault(key, (run, seed))
    return plan


def _init_worker(threads: int) -> None:
    """A worker process of ``--jobs``: its share of the cores."""
    import torch

    torch.set_num_threads(threads)


def train_all(plan: Plan, keys: list[RowKey], iters: int, dry_run: bool, commit: str, jobs: int,
              done: Callable[[RowKey, dict[str, Any]], None], bar) -> None:
    """Train the runs ``keys`` of ``plan`` (``jobs`` at a time) and hand each result to ``done``."""
    if jobs == 1:
        for key in keys:
            run, seed = plan.first[key]
            bar.set_postfix(table=run.table, method=run.method, seed=seed)
            done(key, train_and_score(run, seed, iters, dry_run, commit))
            bar.update()
        return
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // jobs)
    # spawn, not fork: the parent has imported torch, whose thread pools do not survive a fork
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(train_and_score, *plan.first[key], iters, dry_run, commit): key for key in keys}
        for future in as_completed(futures):
            done(futures[future], future.result())
            bar.update()


def sweep(tables: Sequence[str], seeds: Sequence[int], iters: int, dry_run: bool, jobs: int, csv_path: Path) -> str:
    """Train every missing row of ``tables`` × ``seeds`` and append it to ``csv_path``; returns
    (and prints) the summary line: runs trained, rows copied, rows already there."""
    from tqdm.auto import tqdm

    commit = git_commit()  # once, before training: the state of the tree that made the rows
    rows = read_rows(csv_path)
    plan = plan_missing(tables, seeds, iters, dry_run, rows)
    trained = {row_share_key(r): r for r in rows}
    to_train = [key for key in plan.waiting if key not in trained]
    bar = tqdm(total=len(to_train), desc="ablations", unit="run", dynamic_ncols=True)

    def write(key: RowKey, result: dict[str, Any]) -> None:
        """Append the rows of the training run ``key`` (one per table that has it) and print them."""
        for run in plan.waiting[key]:
            row = {**result, "table": run.table, "method": run.method, "options": run.options_json()}
            append_row(csv_path, row)
            bar.write(f"table {row['table']:>2}  {row['method']:<24} seed {row['seed']}  mIoU {row['miou']}  "
                      f"acc {row['pixel_acc']}  {row['train_seconds']} s")

    for key in plan.waiting:
        if key in trained:  # trained earlier for another table
            write(key, trained[key])
    train_all(plan, to_train, iters, dry_run, commit, jobs, write, bar)
    bar.close()
    summary = (f"{len(to_train)} run(s) trained, {len(plan.waiting) - len(to_train)} copied from other tables, "
               f"{plan.planned_rows - sum(len(v) for v in plan.waiting.values())} row(s) already in {csv_path}")
    print(summary)
    return summary


def build_parser(default_csv: Path = DEFAULT_CSV) -> argparse.ArgumentParser:
    """The command line of ``scripts/ablations.py``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", nargs="+", default=["1", "2", "3", "5"], choices=TABLES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iters", type=int, default=None,
                        help="training iterations per run (default: schedule.max_iters of configs/digits.yaml)")
    parser.add_argument("--dry-run", action="store_true",
                        help="2 iterations on 8 scenes per run: checks the plumbing in seconds")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained at once, in separate processes sharing the cores (default 1)")
    parser.add_argument("--csv", type=Path, default=default_csv)
    return parser


def main(argv: Sequence[str] | None = None, default_csv: Path = DEFAULT_CSV) -> int:
    """Parse the command line and run :func:`sweep`; returns the exit status."""
    parser = build_parser(default_csv)
    args = parser.parse_args(argv)
    if args.iters is not None and args.iters < 1:
        parser.error(f"--iters must be positive, got {args.iters}")
    if args.jobs < 1:
        parser.error(f"--jobs must be positive, got {args.jobs}")
    iters = 2 if args.dry_run else (args.iters or load_digits_config().schedule.max_iters)
    sweep(args.tables, args.seeds, iters, args.dry_run, args.jobs, args.csv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
