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


def _meta(report, root: Path, source: str, codes: dict) -> None:
    """mutmut's results for ``source`` in the area ``area``, of the sources as they are now (the digests
    a run records as it starts)."""
    path = root / "mutants" / "area" / "mutants" / f"{source}.meta"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"exit_code_by_key": codes}))
    report.write_run_digests(root / "mutants" / "area")


def test_runs_in_parts_add_up_and_a_changed_file_is_checked_again(report, tmp_path):
    (tmp_path / "ocnet_edu" / "a.py").write_text("x = 1\n")
    (tmp_path / "ocnet_edu" / "b.py").write_text("y = 2\n")
    # first run: a.py's mutants (b.py generated, not run)
    _meta(report, tmp_path, "ocnet_edu/a.py", {"a.f__mutmut_1": 1, "a.f__mutmut_2": 0})
    _meta(report, tmp_path, "ocnet_edu/b.py", {"b.g__mutmut_1": None})
    report.write_report()
    # a fresh checkout (no mutants/) runs b.py only: a.py's results come from the store
    for meta in (tmp_path / "mutants").rglob("*.meta"):
        meta.unlink()
    _meta(report, tmp_path, "ocnet_edu/b.py", {"b.g__mutmut_1": 1})
    assert report.read_results() == {"ocnet_edu/a.py": {"a.f__mutmut_1": "killed", "a.f__mutmut_2": "survived"},
                                     "ocnet_edu/b.py": {"b.g__mutmut_1": "killed"}}
    report.write_report()
    text = (tmp_path / "docs" / "mutation" / "report.md").read_text()
    assert "Checked so far: 3 of 3 mutants" in text and "`a.f__mutmut_2` (survived)" in text
    # a.py changes: its stored results no longer describe it
    (tmp_path / "ocnet_edu" / "a.py").write_text("x = 3\n")
    assert report.read_results() == {"ocnet_edu/a.py": {}, "ocnet_edu/b.py": {"b.g__mutmut_1": "killed"}}
    # nor do mutmut's own results of the older a.py, until a run has seen the new one
    _meta(report, tmp_path, "ocnet_edu/a.py", {"a.f__mutmut_1": 1})
    assert report.read_results()["ocnet_edu/a.py"] == {"a.f__mutmut_1": "killed"}
    (tmp_path / "ocnet_edu" / "a.py").write_text("x = 4\n")
    assert report.read_results()["ocnet_edu/a.py"] == {}
    report.write_run_digests(tmp_path / "mutants" / "area")  # what a run records as it starts
    assert report.read_results()["ocnet_edu/a.py"] == {"a.f__mutmut_1": "killed"}


def test_area_runs_mutate_their_area_with_their_own_tests(report, tmp_path):
    repository = Path(__file__).resolve().parents[1]
    (tmp_path / "pyproject.toml").write_text((repository / "pyproject.toml").read_text())
    tomllib = pytest.importorskip("tomllib")
    areas = tomllib.loads((tmp_path / "pyproject.toml").read_text())["tool"]["ocnet_edu"]["mutation"]["tests"]
    mutated = tomllib.loads((tmp_path / "pyproject.toml").read_text())["tool"]["mutmut"]["only_mutate"]
    covered = []
    for area, files in areas.items():
        config = tomllib.loads(report.area_pyproject(area))
        mutmut = config["tool"]["mutmut"]
        assert mutmut["pytest_add_cli_args_test_selection"][: len(files)] == files
        assert "not slow" in mutmut["pytest_add_cli_args_test_selection"][-1]
        assert mutmut["only_mutate"] and all(g.startswith("ocnet_edu/" + area.replace(".", "/")) for g in mutmut["only_mutate"])
        assert all((repository / f).is_file() for f in files)
        assert config["tool"]["pytest"] == tomllib.loads((repository / "pyproject.toml").read_text())["tool"]["pytest"]
        covered += mutmut["only_mutate"]
    assert sorted(covered) == sorted(mutated)  # every mutated module is in exactly one area
    assert report.area_of_module("nn.isa") == "nn" and report.area_of_module("data.transforms.xǁComposeǁ__call__") == "data.transforms"
    with pytest.raises(SystemExit, match="model"):
        report.area_of_module("model")
    work = report.prepare_area("heads")
    assert (work / "ocnet_edu").resolve() == (tmp_path / "ocnet_edu").resolve()


MUTATED = '''
from einops import rearrange


def x_f__mutmut_orig(x, g):
    y = rearrange(x, "(b g) c -> b g c", g=g)
    return rearrange(y, "b g c -> b (g c)")


def x_f__mutmut_1(x, g):
    y = rearrange(x, "(b g) c -> b g c", g=g)
    return rearrange(y, "B G C -> B (G C)")


def x_f__mutmut_2(x, g):
    y = rearrange(x, "(B G) C -> B G C", g=g)
    return rearrange(y, "b g c -> b (g c)")


def x_f__mutmut_3(x, g):
    y = rearrange(x, "(b g) c -> b g c", g=g)
    return rearrange(y, "XXb g c -> b (g c)XX")


def x_f__mutmut_4(x, g):
    y = rearrange(x, "(b g) c -> b g c", g=g + 1)
    return rearrange(y, "B G C -> B (G C)")
'''


def test_einops_renames_are_recognised_and_recorded(report, tmp_path):
    (tmp_path / "ocnet_edu" / "a.py").write_text("x = 1\n")
    path = tmp_path / "mutants" / "a" / "mutants" / "ocnet_edu" / "a.py"
    path.parent.mkdir(parents=True)
    path.write_text(MUTATED)
    found = {n: report.is_einops_rename(f"ocnet_edu.a.x_f__mutmut_{n}", "ocnet_edu/a.py") for n in range(1, 5)}
    # 1: renamed, no sizes by keyword; 2: an axis size given by keyword (g=g) would no longer match;
    # 3: not a change of case; 4: a second change beside the rename
    assert found == {1: True, 2: False, 3: False, 4: False}
    results = {"ocnet_edu/a.py": {f"ocnet_edu.a.x_f__mutmut_{n}": "survived" for n in range(1, 5)}}
    reasons = report.record_einops_renames(results, {})
    assert list(reasons) == ["ocnet_edu.a.x_f__mutmut_1"] and report.read_equivalent() == reasons
