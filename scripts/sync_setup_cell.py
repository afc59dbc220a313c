"""Write the book's set-up cell into every chapter, or check that each chapter has it (``--check``).

It also writes each page's ``full_scale`` substitution (front matter), which the page's "Run on a
GPU" note shows, from ``book/_scale.yml``.

Every chapter's first code cell is the same: it imports ``ocnet_edu`` and, where the import fails
(Google Colab, a fresh machine), installs the library with the book's extras from the repository
first, then checks the version the chapter was written for. The repository URL comes from
``_config.yml`` (``repository.url``, the one place it is set) and the version from
``ocnet_edu/version.py``, so the cell is generated here and never edited by hand.

Usage: ``python scripts/sync_setup_cell.py`` (rewrite) or ``python scripts/sync_setup_cell.py --check``.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MARKER = "# Set-up: the same first code cell in every chapter"
CELL_RE = re.compile(r"```\{code-cell\} ipython3\n:tags: \[hide-input\]\n\n" + re.escape(MARKER) + r".*?\n```\n",
                     re.DOTALL)
ANCHOR = "```{include} _gpu_note.md\n```\n"

TEMPLATE = '''```{{code-cell}} ipython3
:tags: [hide-input]

{marker}
# (written by scripts/sync_setup_cell.py). In a clone of the repository with ocnet_edu installed it
# only checks the version. Opened anywhere else (Google Colab, a downloaded notebook) it first
# clones the repository (the chapters read its configs and committed results) and works from the
# clone's book/ folder, then installs ocnet_edu from the clone with the book's extras if the import
# fails. OCNET_EDU_REPOSITORY, OCNET_EDU_CLONE and OCNET_EDU_SOURCE override the URL, the folder
# and what is installed.
import importlib
import os
import subprocess
import sys
from pathlib import Path

if not Path("../configs").is_dir():
    repository = os.environ.get("OCNET_EDU_REPOSITORY", "{url}")
    clone = Path(os.environ.get("OCNET_EDU_CLONE", "ocnet_edu_repository")).resolve()
    if not clone.is_dir():
        print(f"not in a clone: cloning {{repository}} into {{clone}}")
        subprocess.run(["git", "clone", "--quiet", "--depth", "1", repository, str(clone)], check=True)
    os.chdir(clone / "book")
try:
    import ocnet_edu
except ImportError:
    source = os.environ.get("OCNET_EDU_SOURCE", f"{{Path('..').resolve()}}[book]")
    print(f"ocnet_edu is not installed: installing {{source}} (a few minutes)")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", source], check=True)
    importlib.invalidate_caches()
    import ocnet_edu

print("ocnet_edu", ocnet_edu.require_version("{version}"))
```
'''


def repository_url(root: Path = ROOT) -> str:
    """``repository.url`` of ``_config.yml``; an error names the key when it is missing."""
    url = (yaml.safe_load((root / "_config.yml").read_text()).get("repository") or {}).get("url", "")
    if not str(url).startswith("https://"):
        raise SystemExit(f"_config.yml: repository.url must be an https URL, got {url!r}")
    return str(url).rstrip("/")


def library_version(root: Path = ROOT) -> str:
    """``__version__`` of ``ocnet_edu/version.py``, read without importing the package."""
    for node in ast.parse((root / "ocnet_edu" / "version.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__version__" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit("ocnet_edu/version.py: no __version__")


def chapters(root: Path = ROOT) -> list[Path]:
    """The toc's pages that are notebooks (a jupytext header), in reading order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]] + [entry["file"] for entry in toc.get("chapters", [])]
    paths = [root / f"{name}.md" for name in files]
    return [path for path in paths if path.read_text().startswith("---\njupytext:")]


def setup_cell(root: Path = ROOT) -> str:
    """The cell's MyST text for this repository and version."""
    return TEMPLATE.format(marker=MARKER, url=repository_url(root), version=library_version(root))


def with_setup_cell(text: str, cell: str, name: str) -> str:
    """``text`` with its set-up cell replaced by ``cell``, or inserted after the GPU note."""
    if CELL_RE.search(text):
        return CELL_RE.sub(lambda _: cell, text, count=1)
    if ANCHOR in text:
        return text.replace(ANCHOR, ANCHOR + "\n" + cell, 1)
    title = re.search(r"^# .*\n", text, flags=re.M)  # a page without the GPU note: after its title
    if title is None:
        raise SystemExit(f"{name}: no set-up cell, no '{{include}} _gpu_note.md' block and no '# ' title to put it after")
    return text[:title.end()] + "\n" + cell + text[title.end():]


def scale_notes(root: Path = ROOT) -> dict[str, str]:
    """``book/_scale.yml``: page (as in the toc) -> what ``OCNET_SCALE=full`` changes on it."""
    return yaml.safe_load((root / "book" / "_scale.yml").read_text())


def with_scale_note(text: str, note: str, name: str) -> str:
    """``text`` whose front matter sets ``myst: substitutions: full_scale`` to ``note`` (replaced or added)."""
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        raise SystemExit(f"{name}: no front matter to hold the page's full_scale note")
    end = text.index("\n---\n", 4) + 1
    header, body = text[:end], text[end:]
    header = re.sub(r"(myst:\n  )?substitutions:\n  +full_scale: .*\n", "", header)
    return header + "myst:\n  substitutions:\n    full_scale: " + json.dumps(note, ensure_ascii=False) + "\n" + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report chapters whose cell differs")
    args = parser.parse_args(argv)
    cell, notes, pages, stale = setup_cell(), scale_notes(), chapters(), []
    for path in pages:
        text = path.read_text()
        page = path.relative_to(ROOT).with_suffix("").as_posix()
        if page not in notes:
            raise SystemExit(f"book/_scale.yml: no entry for {page} (what OCNET_SCALE=full changes on it)")
        new = with_scale_note(with_setup_cell(text, cell, path.name), notes[page], path.name)
        if new != text:
            stale.append(path.name)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print("set-up cell missing or stale in: " + ", ".join(stale) + " (run scripts/sync_setup_cell.py)")
        return 1
    print(("checked " if args.check else "wrote ") + f"the set-up cell of {len(pages)} chapters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
