"""scripts/ablations.py: the dry run writes one row per run with the documented columns, and resumes."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn", reason="the ablations train on DigitScenes (scikit-learn's digits)")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ablations.py"


def load_script():
    """Import scripts/ablations.py by path (registered in ``sys.modules``, as dataclasses need)."""
    if "ablations" in sys.modules:
        return sys.modules["ablations"]
    spec = importlib.util.spec_from_file_location("ablations", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ablations"] = module
    spec.loader.exec_module(module)
    return module


def test_scaled_dilations_and_table_contents():
    ablations = load_script()
    assert ablations.scaled_dilations(64) == [12, 24, 36]
    assert ablations.scaled_dilations(8) == [2, 3, 5]
    assert [r.context for r in ablations.table_runs("2")] == ["none", "ppm", "aspp", "base_oc_sa", "base_oc_isa"]
    assert [r.context for r in ablations.table_runs("3")] == ["sa_2x", "rcca", "cgnl", "efficient_attention",
                                                              "base_oc_isa"]
    assert len(ablations.table_runs("1")) == 11 and len(ablations.table_runs("5")) == 7
    with pytest.raises(ValueError, match="unknown table"):
        ablations.table_runs("4")


def test_every_run_builds():
    """Each run's options are accepted by its module (a typo would fail only after a long sweep)."""
    from ocnet_edu.train import build_model

    ablations = load_script()
    for table in ablations.TABLES:
        for run in ablations.table_runs(table):
            build_model(ablations.build_config(run, 0, 2, True, Path("unused")))


def test_dry_run_writes_rows_and_resumes(tmp_path):
    ablations = load_script()
    out = tmp_path / "ablations.csv"
    assert ablations.main(["--dry-run", "--tables", "3", "--seeds", "0", "--csv", str(out)]) == 0
    with out.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == ablations.COLUMNS
    assert [r["method"] for r in rows] == ["sa_2x", "rcca", "cgnl", "efficient_attention", "base_oc_isa"]
    for row in rows:
        assert row["table"] == "3" and row["seed"] == "0"
        assert 0.0 <= float(row["miou"]) <= 1.0 and 0.0 <= float(row["pixel_acc"]) <= 1.0
        assert float(row["train_seconds"]) > 0
        assert json.loads(row["settings"])["iters"] == 2
        assert json.loads(row["options"])["channels"] == ablations.CHANNELS
    # a second call finds every row and trains nothing
    before = out.read_text()
    assert ablations.main(["--dry-run", "--tables", "3", "--seeds", "0", "--csv", str(out)]) == 0
    assert out.read_text() == before
