"""Proxy versions of the paper's ablations (Tables 1, 2, 3, 5) on the digit-scenes benchmark.

Run from the repository root (with the package installed: ``make install`` or ``pip install -e .``)::

    python scripts/ablations.py                       # Tables 1 2 3 5, seeds 0 1 2
    python scripts/ablations.py --tables 2 --seeds 0 --iters 100
    python scripts/ablations.py --dry-run             # 2 iterations per run: a smoke test
    python scripts/ablations.py --jobs 2              # two runs at a time, one core each

The command line of :mod:`ocnet_edu.experiments.ablations` (the sweep, the proxy tables and how
their sizes are scaled are described there), writing to ``benchmarks/results/ablations.csv`` of
this checkout unless ``--csv`` says otherwise.
"""

from pathlib import Path

from ocnet_edu.experiments.ablations import main

RESULTS_CSV = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "ablations.csv"

if __name__ == "__main__":
    raise SystemExit(main(default_csv=RESULTS_CSV))
