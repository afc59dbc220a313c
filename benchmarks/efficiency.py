"""Efficiency of the context modules (Table 4) and of SA vs ISA (Fig. 4), measured in one run.

Usage (from the repository root, with the package installed: ``make install``)::

    .venv/bin/python benchmarks/efficiency.py                  # the paper's sizes, on CUDA if present
    .venv/bin/python benchmarks/efficiency.py --device cpu     # force the CPU
    .venv/bin/python benchmarks/efficiency.py --side 32 --repeats 3   # a quick, small run

The command line of :mod:`ocnet_edu.experiments.efficiency` (what is measured, and how, is
described there), writing to ``benchmarks/results/`` of this checkout unless ``--out`` says
otherwise. Each measurement runs in a fresh ``python -m ocnet_edu.experiments.efficiency``
process.
"""

from pathlib import Path

from ocnet_edu.experiments.efficiency import main

RESULTS = Path(__file__).resolve().parent / "results"

if __name__ == "__main__":
    main(default_out=RESULTS)
