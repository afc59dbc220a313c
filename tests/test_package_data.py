"""The data the package reads with importlib.resources is declared as package data: a wheel has it.

The paper's tables (ocnet_edu.paper), the digit-cards config and the trained digit models
(ocnet_edu.zoo.digits) live inside ``ocnet_edu/``; a wheel built from the checkout must carry
every one of them, byte for byte.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ocnet_edu"
DATA = sorted([*(PACKAGE / "paper_tables").glob("*.csv"), PACKAGE / "paper_tables" / "README.md",
               PACKAGE / "zoo" / "digits.yaml", *(PACKAGE / "zoo" / "checkpoints").glob("*.pt")])


def test_the_data_is_inside_the_package():
    names = {p.relative_to(PACKAGE).as_posix() for p in DATA}
    assert {"paper_tables/table01.csv", "paper_tables/table4.csv", "paper_tables/table12.csv"} <= names
    assert {f"zoo/checkpoints/digits_{c}.pt" for c in ("base_oc_isa", "base_oc_sa", "none")} <= names
    assert len([n for n in names if n.endswith(".csv")]) == 12
    # configs/digits.yaml is the packaged config, not a second copy of it
    assert (ROOT / "configs" / "digits.yaml").read_text() == (PACKAGE / "zoo" / "digits.yaml").read_text()


@pytest.mark.slow
def test_wheel_contains_the_package_data(tmp_path):
    pytest.importorskip("setuptools")
    source = tmp_path / "source"  # a copy, so that the build leaves the checkout clean
    shutil.copytree(PACKAGE, source / "ocnet_edu", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path / "wheel"), str(source)], check=True, capture_output=True, text=True)
    (wheel,) = (tmp_path / "wheel").glob("ocnet_edu-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for path in DATA:
            name = path.relative_to(ROOT).as_posix()
            assert name in archive.namelist(), name
            assert hashlib.sha256(archive.read(name)).digest() == hashlib.sha256(path.read_bytes()).digest(), name
