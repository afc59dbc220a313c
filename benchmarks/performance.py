"""ISA's engine targets (issue 17): peak memory and time of SA and ISA, inference and training.

Usage (from the repository root, with the package installed: ``make install``)::

    .venv/bin/python benchmarks/performance.py                  # 128x128, 97x97, 128x256 (CUDA if present)
    .venv/bin/python benchmarks/performance.py --sizes 32x32 --processes 1   # a quick run

The command line of :mod:`ocnet_edu.experiments.performance` (what is measured, and how, is
described there), writing to ``benchmarks/results/`` of this checkout unless ``--out`` says
otherwise: ``performance_<device>.csv``, ``performance_targets_<device>.csv`` (the ratio table it
prints) and ``model_training_<device>.csv``.
"""

from pathlib import Path

from ocnet_edu.experiments.performance import main

RESULTS = Path(__file__).resolve().parent / "results"

if __name__ == "__main__":
    main(default_out=RESULTS)
