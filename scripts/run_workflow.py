"""Run the shell steps of a GitHub Actions workflow locally, in a fresh clone.

``python scripts/run_workflow.py .github/workflows/book.yml`` clones this repository (its
committed ``HEAD``) into a temporary folder beside it (so that ``../shared`` resolves as in CI),
and runs every ``run:`` step of every job, in order, with bash; ``uses:`` steps (checkout, the
Python and Node set-up, artifact upload, Pages deployment) are what GitHub provides and are
listed, not run. Steps are run as for a pull request (``--event push`` as for a push to main): a
step whose ``if:`` is ``github.event_name == '...'`` for another event is listed and skipped, so
the local run never publishes anything. ``--list`` only prints the steps. The point: the commands the workflows run are
the commands README.md gives and ``.ci/run`` runs, and they pass on a clean checkout.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def runs_on_event(condition: str | None, event: str) -> bool:
    """Whether a step's ``if:`` holds for ``event``; only ``github.event_name == '<event>'`` is understood."""
    if condition is None:
        return True
    match = re.fullmatch(r"\s*github\.event_name\s*==\s*'([a-z_]+)'\s*", str(condition))
    if match is None:
        raise ValueError(f"unsupported step condition {condition!r}: only github.event_name == '...' is understood")
    return match.group(1) == event


def workflow_steps(path: Path, event: str = "pull_request") -> list[tuple[str, str, str]]:
    """``(job, kind, text)`` for every step of the workflow at ``path``, in order; ``kind`` is
    ``"run"`` (text = the shell command), ``"uses"`` (text = the action) or ``"skip"`` (a ``run:``
    step whose ``if:`` does not hold for ``event``)."""
    workflow = yaml.safe_load(path.read_text())
    steps = []
    for job_name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            kind = "run" if "run" in step else "uses"
            text = str(step[kind]).strip()
            if kind == "run" and not runs_on_event(step.get("if"), event):
                kind = "skip"
            steps.append((job_name, kind, text))
    return steps


def run_in_fresh_clone(commands: list[str]) -> int:
    """Clone ``HEAD`` next to the repository and run ``commands`` there; the first failure's code."""
    with tempfile.TemporaryDirectory(prefix="workflow-", dir=ROOT.parent) as tmp:
        clone = Path(tmp) / ROOT.name
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        for command in commands:
            print(f"$ {command}", flush=True)
            code = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=clone).returncode
            if code:
                return code
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line: list or run the ``run:`` steps of one workflow file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflow", type=Path)
    parser.add_argument("--list", action="store_true", help="print the steps, run nothing")
    parser.add_argument("--event", default="pull_request", choices=["pull_request", "push"],
                        help="the event the steps' if: conditions are evaluated for")
    args = parser.parse_args(argv)
    steps = workflow_steps(args.workflow, args.event)
    for job, kind, text in steps:
        print(f"[{job}] {kind}: {text}")
    if args.list:
        return 0
    return run_in_fresh_clone([text for _, kind, text in steps if kind == "run"])


if __name__ == "__main__":
    sys.exit(main())
