#!/usr/bin/env bash
# Publish the book's executed notebooks to the branch Colab opens them from.
# Usage: bash scripts/publish_notebooks.sh [DIR] [REMOTE] [BRANCH]
#   DIR     the notebooks of the built book (default _build/html/notebooks; `make notebooks`)
#   REMOTE  where to push (default origin)       BRANCH  default notebooks (book/_ext/notebook_links.py)
# The branch holds only the notebooks, as one commit replaced on every publication (force-push).
# The commit is made with git plumbing inside this repository, so the push uses the checkout's
# credentials (in GitHub Actions, those actions/checkout stored).
set -euo pipefail
dir="${1:-_build/html/notebooks}"
remote="${2:-origin}"
branch="${3:-notebooks}"
shopt -s nullglob
notebooks=("$dir"/*.ipynb)
if [ ${#notebooks[@]} -eq 0 ]; then
  echo "publish_notebooks: no .ipynb in $dir (run make book, then make notebooks)" >&2
  exit 1
fi
git_dir="$(git rev-parse --absolute-git-dir)"
index="$(mktemp -u)"
trap 'rm -f "$index"' EXIT
tree="$(cd "$dir" && GIT_DIR="$git_dir" GIT_WORK_TREE=. GIT_INDEX_FILE="$index" \
  sh -c 'git add -- ./*.ipynb && git write-tree')"
source_commit="$(git rev-parse --short HEAD)"
commit="$(git -c user.name="ocnet_edu book" -c user.email="book@ocnet-edu.invalid" \
  commit-tree "$tree" -m "Executed notebooks of the book at $source_commit")"
git push --force "$remote" "$commit:refs/heads/$branch"
echo "publish_notebooks: ${#notebooks[@]} notebooks -> $remote $branch ($commit)"
