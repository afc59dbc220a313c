"""Execute the book's chapters with nbval: ``pytest --nbval book``.

The chapters are notebooks kept as MyST Markdown (jupytext, ``format_name: myst``). nbval
collects only ``.ipynb`` files, so this conftest adds a collector for the ``.md`` chapters:

* only when ``--nbval`` (or ``--nbval-lax``) is given, and only for the files listed in the
  repository's ``_toc.yml`` that carry a jupytext/kernelspec header (``book/index.md`` is plain
  Markdown and is skipped);
* the file is read with ``jupytext.read`` and handed to nbval's own machinery (a subclass of
  ``nbval.plugin.IPyNbFile``), which runs every code cell, in order, in one kernel;
* text sources have no stored outputs, so every code cell is tagged ``nbval-ignore-output`` in
  memory: outputs are not compared, but an exception in a cell (a failed ``assert`` included)
  fails that cell's test item with nbval's "Notebook cell execution failed" report;
* the kernel runs in ``book/`` (chapters read ``../data/...``) and in the Python environment
  that runs pytest, unless ``--nbval-kernel-name`` names another kernel.

Notebooks made from the chapters with ``jupytext --to ipynb`` are ignored, so a chapter is never
run twice.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import jupytext
import yaml
from nbval.kernel import CURRENT_ENV_KERNEL_NAME, RunningKernel
from nbval.cover import setup_coverage
from nbval.plugin import IPyNbCell, IPyNbFile, find_comment_markers, find_metadata_tags

BOOK_DIR = Path(__file__).resolve().parent
ROOT_DIR = BOOK_DIR.parent
TOC_PATH = ROOT_DIR / "_toc.yml"
IGNORE_OUTPUT_TAG = "nbval-ignore-output"

# jupytext --to ipynb copies (and the book's downloads) are not sources: never collect them.
collect_ignore_glob = ["*.ipynb", "_mathjax/*"]


def _toc_files(node: object) -> list[str]:
    """All ``file:`` and ``root:`` entries of a sphinx-external-toc tree, in reading order."""
    found: list[str] = []
    if isinstance(node, dict):
        for key in ("root", "file"):
            if isinstance(node.get(key), str):
                found.append(node[key])
        for key in ("parts", "chapters", "sections", "subtrees", "entries"):
            for child in node.get(key, []) or []:
                found.extend(_toc_files(child))
    elif isinstance(node, list):
        for child in node:
            found.extend(_toc_files(child))
    return found


def toc_sources(toc_path: Path = TOC_PATH) -> list[Path]:
    """The source file of every document in ``_toc.yml`` (entries are given without suffix)."""
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    sources = []
    for entry in _toc_files(toc):
        stem = ROOT_DIR / entry
        candidates = [stem] if stem.suffix else [stem.with_suffix(s) for s in (".md", ".ipynb")]
        existing = [c.resolve() for c in candidates if c.is_file()]
        if not existing:
            raise FileNotFoundError(f"{toc_path.name} lists {entry!r} but no such file exists")
        sources.append(existing[0])
    return sources


def is_text_notebook(path: Path) -> bool:
    """True for a MyST Markdown file that jupytext reads as a notebook with a kernel."""
    head = path.read_text(encoding="utf-8")[:2000]
    return head.startswith("---") and "kernelspec:" in head and "format_name: myst" in head


def pytest_collect_file(file_path: Path, parent):
    option = parent.config.option
    if not (option.nbval or option.nbval_lax) or file_path.suffix != ".md":
        return None
    if file_path.resolve() not in toc_sources() or not is_text_notebook(file_path):
        return None
    return MystNotebookFile.from_parent(parent, path=file_path)


class MystNotebookFile(IPyNbFile):
    """nbval's notebook collector, fed from a jupytext MyST Markdown source."""

    def collect(self):
        self.nb = jupytext.read(self.path)
        cell_num = 0
        for cell in self.nb.cells:
            if cell.cell_type != "code":
                continue
            tags = cell.metadata.setdefault("tags", [])
            if IGNORE_OUTPUT_TAG not in tags:
                tags.append(IGNORE_OUTPUT_TAG)
            # Same option resolution as nbval's IPyNbFile.collect: tags, then comment markers.
            options = defaultdict(bool, find_metadata_tags(cell.metadata))
            options.update(find_comment_markers(cell.source))
            options.setdefault("check", False)
            yield IPyNbCell.from_parent(
                self, name=f"Cell {cell_num}", cell_num=cell_num, cell=cell, options=options
            )
            cell_num += 1

    def setup(self):
        """Start the kernel in ``book/``, in pytest's own environment by default."""
        option = self.config.option
        kernel_name = option.nbval_kernel_name or CURRENT_ENV_KERNEL_NAME
        self.kernel = RunningKernel(
            kernel_name,
            cwd=str(BOOK_DIR),
            startup_timeout=option.nbval_kernel_startup_timeout,
        )
        self.setup_sanitize_files()
        if getattr(option, "cov_source", None):
            setup_coverage(self.config, self.kernel, self.fspath)
