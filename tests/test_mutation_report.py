"""scripts/mutation_report.py: results of runs in parts add up, and a changed file's results are dropped."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mutation_report.py"


@pytest.fixture()
def report(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("mutation_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    docs = tmp_path / "docs" / "mutation"
    for name, value in {"ROOT": tmp_path, "DOCS": docs, "RUNS": docs / "runs.jsonl", "EQUIVALENT": docs / "equivalent.tsv",
                        "REPORT": docs / "report.md", "RESULTS": docs / "results.json",
                        "MUTANTS": tmp_path / "mutants"}.items():
        monkeypatch.setattr(module, name, value)
    (tmp_path / "ocnet_edu").mkdir()
    return module


def _meta(root: Path, source: str, codes: dict) -> None:
    path = root / "mutants" / f"{source}.meta"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"exit_code_by_key": codes}))


def test_runs_in_parts_add_up_and_a_changed_file_is_checked_again(report, tmp_path):
    (tmp_path / "ocnet_edu" / "a.py").write_text("x = 1\n")
    (tmp_path / "ocnet_edu" / "b.py").write_text("y = 2\n")
    # first run: a.py's mutants (b.py generated, not run)
    _meta(tmp_path, "ocnet_edu/a.py", {"a.f__mutmut_1": 1, "a.f__mutmut_2": 0})
    _meta(tmp_path, "ocnet_edu/b.py", {"b.g__mutmut_1": None})
    report.write_report()
    # a fresh checkout (no mutants/) runs b.py only: a.py's results come from the store
    for meta in (tmp_path / "mutants").rglob("*.meta"):
        meta.unlink()
    _meta(tmp_path, "ocnet_edu/b.py", {"b.g__mutmut_1": 1})
    assert report.read_results() == {"ocnet_edu/a.py": {"a.f__mutmut_1": "killed", "a.f__mutmut_2": "survived"},
                                     "ocnet_edu/b.py": {"b.g__mutmut_1": "killed"}}
    report.write_report()
    text = (tmp_path / "docs" / "mutation" / "report.md").read_text()
    assert "Checked so far: 3 of 3 mutants" in text and "`a.f__mutmut_2` (survived)" in text
    # a.py changes: its stored results no longer describe it
    (tmp_path / "ocnet_edu" / "a.py").write_text("x = 3\n")
    assert report.read_results() == {"ocnet_edu/a.py": {}, "ocnet_edu/b.py": {"b.g__mutmut_1": "killed"}}
