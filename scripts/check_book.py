#!/usr/bin/env python3
"""Check the built book in a real browser: math typeset, figures shown, nothing fetched from outside.

Usage (``make check-book`` runs it after ``make book``)::

    python scripts/check_book.py [--html _build/html] [--screenshot CHAPTER=PNG] \
        01_introduction=math,img 02_context_sets= ...

Each positional argument is ``CHAPTER=EXPECTATIONS``: ``CHAPTER`` is a page of the built book
relative to ``book/`` without suffix, ``EXPECTATIONS`` a comma-separated subset of

* ``math``: the page has typeset math (at least one ``<mjx-container>`` after MathJax ran);
* ``img``:  the page shows at least one ``<img>`` whose file exists in the build.

An empty expectation list only checks that the page loads. On every page MathJax must report no
errors (no ``<mjx-merror>``). Every built HTML file is also scanned for ``<script>``/``<link>``
elements that load from ``http(s)://``: the book must display offline.

Each page is opened in headless Chromium with ``--dump-dom`` and a virtual time budget, so that
MathJax has run before the DOM is read.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

KNOWN_EXPECTATIONS = {"math", "img"}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--virtual-time-budget=5000",
]
EXTERNAL_RESOURCE = re.compile(
    r"<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*[\"'](?:https?:)?//[^\"']*[\"'][^>]*>",
    re.IGNORECASE,
)
IMG_SRC = re.compile(r"<img\b[^>]*\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)


@dataclass(frozen=True)
class PageCheck:
    """One positional argument: a chapter and what its page must show (``math``, ``img``)."""

    chapter: str
    expect: frozenset[str]


def parse_check(text: str) -> PageCheck:
    """Parse ``CHAPTER=EXPECTATIONS`` (an argparse type: bad input raises ArgumentTypeError)."""
    chapter, sep, expect = text.partition("=")
    if not sep or not chapter:
        raise argparse.ArgumentTypeError(f"expected CHAPTER=EXPECTATIONS, got {text!r}")
    wanted = frozenset(e.strip() for e in expect.split(",") if e.strip())
    unknown = wanted - KNOWN_EXPECTATIONS
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown expectation(s) {sorted(unknown)} in {text!r}")
    return PageCheck(chapter, wanted)


def find_chromium() -> str:
    """The path of a Chromium (or Chrome) executable; exits with a message if there is none."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("check_book: no chromium found (make check-book installs the Debian package)")


def run_chromium(chromium: str, profile: Path, extra: list[str], url: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on ``url`` with the common flags, the profile folder and ``extra``."""
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def dump_dom(chromium: str, profile: Path, page: Path) -> str:
    """The DOM of ``page`` after its scripts (MathJax) ran, as HTML text."""
    result = run_chromium(chromium, profile, ["--dump-dom"], page.as_uri())
    if result.returncode != 0 or "<html" not in result.stdout.lower():
        raise RuntimeError(f"chromium failed on {page} (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return result.stdout


def local_images(dom: str, page: Path) -> tuple[int, list[str]]:
    """Number of <img> elements and the list of those whose file is missing."""
    sources = IMG_SRC.findall(dom)
    missing = []
    for src in sources:
        parsed = urlparse(src)
        if parsed.scheme == "data":
            continue
        if parsed.scheme in ("http", "https") or src.startswith("//"):
            missing.append(src)  # remote image: not available offline
            continue
        path = Path(unquote(parsed.path)) if parsed.scheme == "file" else page.parent / unquote(parsed.path)
        if not path.is_file():
            missing.append(src)
    return len(sources), missing


def external_resources(html_root: Path) -> list[str]:
    """Every ``<script>``/``<link>`` of the built HTML that loads from ``http(s)://`` (``page: element``)."""
    hits = []
    for page in sorted(html_root.rglob("*.html")):
        for match in EXTERNAL_RESOURCE.finditer(page.read_text(encoding="utf-8", errors="replace")):
            hits.append(f"{page.relative_to(html_root)}: {match.group(0)[:160]}")
    return hits


Row = tuple[str, str, str, str, str, str]


def check_page(chromium: str, profile: Path, page: Path, check: PageCheck) -> tuple[Row, list[str]]:
    """Open one built chapter and check it: ``(table row, problems)``."""
    expects = ",".join(sorted(check.expect)) or "-"
    if not page.is_file():
        return (check.chapter, "-", "-", "-", expects, "MISSING"), [f"{page} was not built"]
    dom = dump_dom(chromium, profile, page)
    n_math = dom.count("<mjx-container")
    n_errors = dom.count("<mjx-merror")
    n_img, missing = local_images(dom, page)
    problems = []
    if "math" in check.expect and n_math == 0:
        problems.append("no typeset math")
    if "img" in check.expect and n_img == 0:
        problems.append("no <img>")
    if missing:
        problems.append(f"images not found: {missing}")
    if n_errors:
        problems.append(f"{n_errors} MathJax error(s)")
    return (check.chapter, str(n_math), str(n_errors), str(n_img), expects, "ok" if not problems else "FAIL"), problems


def print_table(rows: list[Row]) -> None:
    """Print the per-chapter results as an aligned text table."""
    header = ("chapter", "mjx-container", "mjx-merror", "img", "expects", "result")
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))


def take_screenshot(chromium: str, profile: Path, page: Path, png: str, window_size: str) -> str | None:
    """Save a screenshot of ``page`` to ``png``; returns an error message, or None."""
    out = Path(png).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    result = run_chromium(chromium, profile,
                          [f"--screenshot={out}", f"--window-size={window_size}", "--hide-scrollbars"], page.as_uri())
    if result.returncode != 0 or not out.is_file():
        return f"screenshot of {page.stem} failed: {result.stderr[-2000:]}"
    print(f"screenshot: {out} ({out.stat().st_size} bytes)")
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checks", nargs="+", type=parse_check, metavar="CHAPTER=EXPECTATIONS")
    parser.add_argument("--html", type=Path, default=Path("_build/html"), help="built HTML root")
    parser.add_argument("--pages-dir", default="book", help="folder of the chapters inside --html")
    parser.add_argument("--screenshot", metavar="CHAPTER=PNG", help="save a screenshot of one chapter")
    parser.add_argument("--window-size", default="1280,1600", help="screenshot size in pixels, W,H")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Check every chapter, the whole build for external resources, take the screenshot; 0 if all passed."""
    args = parse_args(argv)
    chromium = find_chromium()
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True, check=False)
    print(f"browser: {version.stdout.strip() or chromium}")
    failures: list[str] = []
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="check_book_") as tmp:
        profile = Path(tmp)
        for check in args.checks:
            row, problems = check_page(chromium, profile, (args.html / args.pages_dir / f"{check.chapter}.html").resolve(),
                                       check)
            rows.append(row)
            failures.extend(f"{check.chapter}: {p}" for p in problems)
        print_table(rows)
        external = external_resources(args.html)
        print(f"external <script>/<link> references in {args.html}: {len(external)}")
        for hit in external:
            print(f"  {hit}")
        failures.extend(f"external resource: {hit}" for hit in external)
        if args.screenshot:
            chapter, _, png = args.screenshot.partition("=")
            error = take_screenshot(chromium, profile, (args.html / args.pages_dir / f"{chapter}.html").resolve(), png,
                                    args.window_size)
            failures.extend([error] if error else [])
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("all book checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
