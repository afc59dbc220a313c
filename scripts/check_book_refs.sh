#!/usr/bin/env bash
# Build the book WITHOUT executing its chapters (seconds, not minutes): checks MyST syntax,
# cross-references ({ref}, {eq}, {numref}), citations ({cite}) and the table of contents, with every
# Sphinx warning an error, as `make book` does. Used while writing; `make book` remains the real build.
# Usage: bash scripts/check_book_refs.sh [PYTHON_BIN_DIR]   (default .venv/bin)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-$root/.venv/bin}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$root"
git ls-files -co --exclude-standard | grep -v -E '^(node_modules|\.venv)/' | tar -cf - -T - | tar -xf - -C "$tmp"
mkdir -p "$tmp/book/_mathjax"
sed -i 's/execute_notebooks: force/execute_notebooks: "off"/' "$tmp/_config.yml"
# A figure made by a code cell (`mystnb: figure: name: fig-...`) exists only once the cell has run,
# so without execution a {numref} to it is "undefined"; those labels, and only those, are let
# through here (`make book` executes the cells and checks them for real).
cell_figures="$(grep -ho 'name: fig-[A-Za-z0-9_-]*' book/*.md | sed 's/name: //' | sort -u | paste -sd '|' -)"
if ! "$bin/jupyter-book" build "$tmp" -W -n --keep-going > "$tmp/build.log" 2>&1; then
  problems="$(grep -E "WARNING|ERROR" "$tmp/build.log" | sed "s|$tmp/||" \
    | grep -v -E "undefined label: '(${cell_figures:-^$})'" || true)"
  # -W turns the let-through warnings into a failed build too: fail only on the others
  if [ -n "$problems" ] || ! grep -q -E "WARNING|ERROR" "$tmp/build.log"; then
    echo "$problems"; echo "check_book_refs: FAILED"; exit 1
  fi
fi
echo "check_book_refs: ok (no warnings but links to figures made by cells; chapters not executed)"
