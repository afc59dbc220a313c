"""``environment.yml`` (conda) is complete: every dependency that pyproject.toml declares for the
library, the book and the tests is in it, and every package it names is pinned in the lock file
that CI installs (no conda or micromamba can be installed here, so this compares the lists)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

import ocnet_edu

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge names that differ from PyPI's
NOT_PYTHON = {"python", "pip", "nodejs"}


def normalise(name: str) -> str:
    """PyPI's name normalisation (PEP 503), after mapping conda-only names."""
    name = CONDA_NAMES.get(name, name)
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    """``"scikit-learn>=1.3"`` → ``"scikit-learn"``."""
    return normalise(re.split(r"[<>=!~\[ ;]", spec.strip(), maxsplit=1)[0])


def environment_packages() -> set[str]:
    """Package names in environment.yml, conda and pip sections together (``-e .`` excluded)."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    names = set()
    for item in env["dependencies"]:
        entries = item["pip"] if isinstance(item, dict) else [item]
        names |= {requirement_name(e) for e in entries if not e.startswith("-e")}
    return names - NOT_PYTHON


def declared_dependencies() -> set[str]:
    """The library's dependencies and those of its ``book`` and ``test`` extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["book"] + project["optional-dependencies"]["test"]
    return {requirement_name(s) for s in specs}


def locked_packages() -> set[str]:
    """Names pinned in requirements.lock."""
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    return {requirement_name(line) for line in lines if line.strip() and not line.startswith("#")}


def test_environment_yml_has_every_declared_dependency():
    missing = declared_dependencies() - environment_packages()
    assert not missing, f"environment.yml lacks {sorted(missing)}"


def test_every_environment_package_is_in_the_lock_file():
    unlocked = environment_packages() - locked_packages()
    assert not unlocked, f"requirements.lock does not pin {sorted(unlocked)}"


def test_book_extra_runs_the_chapters():
    """The digit-cards benchmark of chapters 11–13 needs scikit-learn's bundled digits."""
    book = {requirement_name(s) for s in tomllib.loads((ROOT / "pyproject.toml").read_text())
            ["project"]["optional-dependencies"]["book"]}
    assert {"scikit-learn", "matplotlib", "pandas", "jupyter-book"} <= book


def _chapter_imports() -> set[str]:
    """Top-level module names every chapter's code cells import."""
    import ast
    import sys as _sys

    import jupytext

    _sys.path.insert(0, str(ROOT / "scripts"))
    from sync_setup_cell import chapters

    found = set()
    for path in chapters():
        for cell in jupytext.read(path).cells:
            if cell.cell_type != "code":
                continue
            for node in ast.walk(ast.parse(cell.source)):  # the chapters use no IPython magics
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    found.add(node.module.split(".")[0])
    return found


def test_the_library_and_its_book_extra_provide_every_chapter_import():
    """`pip install ocnet_edu[book]` is enough: each third-party module a chapter imports comes from a
    distribution that the core dependencies or the `book` extra name."""
    import importlib.metadata
    import sys as _sys

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {requirement_name(s) for s in project["dependencies"] + project["optional-dependencies"]["book"]}
    providers = importlib.metadata.packages_distributions()
    third_party = {name for name in _chapter_imports() if name not in _sys.stdlib_module_names and name != "ocnet_edu"}
    assert {"torch", "matplotlib", "numpy"} <= third_party  # the scan sees the chapters' imports
    undeclared = {name: providers.get(name) for name in third_party
                  if not {requirement_name(d) for d in providers.get(name, [])} & declared}
    assert not undeclared, f"chapters import modules no declared distribution provides: {undeclared}"


def test_version_has_one_source():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ocnet_edu.version.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", ocnet_edu.__version__)
    assert f"## {ocnet_edu.__version__}" in (ROOT / "CHANGELOG.md").read_text()
