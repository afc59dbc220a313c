"""Check the executed notebooks of the built book: one per chapter, every code cell run.

``make book`` writes them (book/_ext/notebook_links.py copies MyST-NB's executed notebooks into
``_build/html/notebooks/``); ``make notebooks`` runs this check, so a chapter that lost its
notebook, or a notebook saved without outputs, fails loudly before it is published for Colab.

Usage: ``python scripts/notebooks.py [DIR]`` (default ``_build/html/notebooks``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from sync_setup_cell import chapters  # noqa: E402  (the toc's notebook pages, one definition)


def problems(directory: Path, names: list[str]) -> list[str]:
    """What is wrong with ``directory``: a missing notebook, bad JSON, or a code cell not executed."""
    found = []
    for name in names:
        path = directory / f"{name}.ipynb"
        if not path.is_file():
            found.append(f"{path}: missing (build the book with `make book`)")
            continue
        try:
            notebook = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            found.append(f"{path}: not a notebook ({error})")
            continue
        code = [cell for cell in notebook.get("cells", []) if cell.get("cell_type") == "code"]
        if not code:
            found.append(f"{path}: no code cells")
        idle = [i for i, cell in enumerate(code) if cell.get("execution_count") is None]
        if idle:
            found.append(f"{path}: code cells {idle[:5]} were not executed")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", type=Path, default=ROOT / "_build" / "html" / "notebooks")
    args = parser.parse_args(argv)
    names = [path.stem for path in chapters()]
    found = problems(args.directory, names)
    for line in found:
        print(line)
    if not found:
        print(f"{len(names)} executed notebooks in {args.directory}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
