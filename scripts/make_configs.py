"""Write configs/paper/*.yaml: one config per experiment of Tables 1-3, 5 and 7-11.

Run from the repository root: ``python scripts/make_configs.py``. The files are committed; this
script is how they were made (and a test checks that they are what it writes). The configs
themselves are defined in :mod:`ocnet_edu.experiments.configs`.
"""

from pathlib import Path

from ocnet_edu.experiments.configs import main

OUT = Path(__file__).resolve().parents[1] / "configs" / "paper"

if __name__ == "__main__":
    main(OUT)
