"""ocnet_edu.experiments.ablations (scripts/ablations.py): the dry run writes one row per run with the
documented columns, and resumes."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn", reason="the ablations train on DigitScenes (scikit-learn's digits)")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ablations.py"


def load_script():
    """The sweep's module (``scripts/ablations.py`` is its command line)."""
    from ocnet_edu.experiments import ablations

    return ablations


def test_scaled_dilations_and_table_contents():
    ablations = load_script()
    assert ablations.scaled_dilations(64) == [12, 24, 36]
    assert ablations.scaled_dilations(8) == [2, 3, 5]
    assert ablations.base_feature_side() == 12 and ablations.scaled_dilations(12) == [2, 5, 7]
    assert json.loads(ablations.table_runs("2")[2].options_json())["dilations"] == [2, 5, 7]
    assert [r.method for r in ablations.table_runs("rf")] == ["none rf 19", "none rf 51", "none rf 79", "none rf 107"]
    assert [r.context for r in ablations.table_runs("2")] == ["none", "ppm", "aspp", "base_oc_sa", "base_oc_isa"]
    assert [r.context for r in ablations.table_runs("3")] == ["sa_2x", "rcca", "cgnl", "efficient_attention",
                                                              "base_oc_isa"]
    assert len(ablations.table_runs("1")) == 11 and len(ablations.table_runs("5")) == 7
    with pytest.raises(ValueError, match="unknown table"):
        ablations.table_runs("4")


def test_every_run_builds():
    """Each run's options are accepted by its module (a typo would fail only after a long sweep)."""
    from ocnet_edu.engine.builders import build_model

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


def test_shared_configurations_train_once(tmp_path, capsys):
    """Tables 2 and 5 share the baseline and both Base-OC rows: one training run each, the same
    numbers in both tables; the receptive-field table's first row is the baseline again."""
    ablations = load_script()
    out = tmp_path / "ablations.csv"
    assert ablations.main(["--dry-run", "--tables", "2", "5", "rf", "--seeds", "0", "--csv", str(out)]) == 0
    # table 2: 5 runs; table 5 adds Pyramid-OC and ASP-OC (4); rf adds three deeper backbones
    assert "12 run(s) trained" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open(newline="")))
    assert len(rows) == 5 + 7 + 4
    by = {(r["table"], r["method"]): r for r in rows}
    for method in ("none", "base_oc_sa", "base_oc_isa"):
        assert by["2", method]["miou"] == by["5", method]["miou"]
        assert by["2", method]["train_seconds"] == by["5", method]["train_seconds"]
    assert by["rf", "none rf 19"]["train_seconds"] == by["2", "none"]["train_seconds"]
    assert json.loads(by["rf", "none rf 51"]["settings"])["backbone_options"]["head_kernel"] == 3


@pytest.mark.slow
def test_parallel_jobs_write_every_row(tmp_path):
    """``--jobs 2`` (spawned worker processes, run as a script) gives the rows of one job."""
    import subprocess

    out = tmp_path / "ablations.csv"
    subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--tables", "2", "--seeds", "0", "--jobs", "2",
                    "--csv", str(out)], check=True, capture_output=True, text=True)
    rows = list(csv.DictReader(out.open(newline="")))
    assert sorted(r["method"] for r in rows) == sorted(["none", "ppm", "aspp", "base_oc_sa", "base_oc_isa"])
