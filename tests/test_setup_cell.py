"""The chapters' set-up cell (scripts/sync_setup_cell.py) and the version check it makes.

The cell must do nothing but check the version where ocnet_edu is importable, and install it
first where it is not (Google Colab). Both branches run here in a fresh virtual environment: it
sees the test environment's packages (torch, numpy, ...) through a ``.pth`` file, but not
ocnet_edu, whose editable install is only found from the test environment's own site directory.
"""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from helpers import git
import yaml

import ocnet_edu
from ocnet_edu.version import require_version

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import sync_setup_cell  # noqa: E402  (a script, not a package module)


def test_every_chapter_has_the_current_setup_cell_first():
    assert sync_setup_cell.main(["--check"]) == 0
    for path in sync_setup_cell.chapters():
        first_code_cell = path.read_text().split("```{code-cell} ipython3", 2)[1]
        assert sync_setup_cell.MARKER in first_code_cell, path.name


def test_the_cell_installs_from_the_repository_set_in_config_yml():
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    cell = sync_setup_cell.setup_cell()
    assert f'"OCNET_EDU_REPOSITORY", "{url}"' in cell
    assert f'require_version("{ocnet_edu.__version__}")' in cell


def test_a_stale_cell_is_replaced_and_a_missing_one_inserted_after_the_gpu_note():
    cell = sync_setup_cell.setup_cell()
    bare = "# Title\n\n" + sync_setup_cell.ANCHOR + "\ntext\n"
    inserted = sync_setup_cell.with_setup_cell(bare, cell, "x.md")
    assert inserted.index(sync_setup_cell.ANCHOR) < inserted.index(sync_setup_cell.MARKER) < inserted.index("text")
    stale = inserted.replace(ocnet_edu.__version__, "0.0.1")
    assert sync_setup_cell.with_setup_cell(stale, cell, "x.md") == inserted
    titled = sync_setup_cell.with_setup_cell("# Title\n\nbody\n", cell, "x.md")
    assert titled.index("# Title") < titled.index(sync_setup_cell.MARKER) < titled.index("body")
    with pytest.raises(SystemExit, match="x.md"):
        sync_setup_cell.with_setup_cell("no title here\n", cell, "x.md")


@pytest.mark.parametrize("installed, minimum", [("0.2.0", "0.2.0"), ("0.10.0", "0.9.1"), ("1.0", "0.9.9"),
                                                ("0.2.1+local", "0.2")])
def test_require_version_accepts_equal_or_newer(installed, minimum):
    assert require_version(minimum, installed=installed) == installed


@pytest.mark.parametrize("installed, minimum", [("0.1.9", "0.2.0"), ("0.9.1", "0.10.0"), ("0.2", "0.2.1")])
def test_require_version_refuses_older_and_says_how_to_upgrade(installed, minimum):
    with pytest.raises(RuntimeError, match=rf"needs ocnet_edu >= {re.escape(minimum)}.*{re.escape(installed)}.*upgrade"):
        require_version(minimum, installed=installed)


@pytest.mark.parametrize("minimum", ["", "v0.2", "0.2.x", "latest"])
def test_require_version_names_a_malformed_argument(minimum):
    with pytest.raises(ValueError, match="minimum"):
        require_version(minimum)


def _cell_code() -> str:
    """The Python source of the set-up cell (its fenced body, MyST options dropped)."""
    body = sync_setup_cell.setup_cell().split("\n", 1)[1].rsplit("```", 1)[0]
    return body.split("\n\n", 1)[1]


def test_the_setup_cell_clones_installs_when_missing_and_only_checks_when_present(tmp_path):
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(wheel_dir), str(ROOT)], check=True, capture_output=True, text=True)
    (wheel,) = wheel_dir.glob("ocnet_edu-*.whl")
    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    fresh_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                check=True, capture_output=True, text=True).stdout.strip()
    # The test environment's packages, but not its editable ocnet_edu (a .pth inside a path added by
    # a .pth is not processed, so the editable finder does not load).
    Path(fresh_site, "test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "work"  # a notebook opened outside any clone: no ../configs
    work.mkdir()
    missing = subprocess.run([str(python), "-c", "import ocnet_edu"], capture_output=True, text=True, cwd=work)
    assert missing.returncode != 0 and "No module named 'ocnet_edu'" in missing.stderr

    # A stand-in for the repository (the real one is on GitHub): a git repository with book/ and configs/.
    origin = tmp_path / "origin"
    (origin / "book").mkdir(parents=True)
    (origin / "configs").mkdir()
    (origin / "book" / "x.md").write_text("page\n")
    (origin / "configs" / "x.yaml").write_text("a: 1\n")
    git("init", "--quiet", str(origin), cwd=tmp_path)
    git("add", "-A", cwd=origin)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "repo", cwd=origin)
    clone = tmp_path / "clone"
    env = {"OCNET_EDU_SOURCE": str(wheel), "OCNET_EDU_REPOSITORY": str(origin), "OCNET_EDU_CLONE": str(clone),
           "PIP_NO_DEPS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    code = _cell_code() + "\nprint('cwd', Path.cwd())\n"
    first = subprocess.run([str(python), "-c", code], env=env, capture_output=True, text=True, cwd=work)
    assert first.returncode == 0, first.stderr
    assert f"cloning {origin} into {clone}" in first.stdout and (clone / "configs" / "x.yaml").is_file()
    assert f"installing {wheel}" in first.stdout
    assert f"ocnet_edu {ocnet_edu.__version__}\ncwd {clone / 'book'}" in first.stdout
    located = subprocess.run([str(python), "-c", "import ocnet_edu; print(ocnet_edu.__file__)"], env=env,
                             capture_output=True, text=True, cwd=work)
    assert located.stdout.startswith(fresh_site), located.stdout

    again = subprocess.run([str(python), "-c", code], env=env, capture_output=True, text=True, cwd=work)
    assert again.returncode == 0, again.stderr
    assert "cloning" not in again.stdout and "installing" not in again.stdout  # the clone is reused
    assert again.stdout.strip().splitlines() == [f"ocnet_edu {ocnet_edu.__version__}", f"cwd {clone / 'book'}"]

    inside = subprocess.run([str(python), "-c", code], env=env, capture_output=True, text=True, cwd=clone / "book")
    assert inside.stdout.strip().splitlines() == [f"ocnet_edu {ocnet_edu.__version__}", f"cwd {clone / 'book'}"]


def test_every_page_says_what_full_scale_changes_and_nothing_else_is_listed():
    notes = sync_setup_cell.scale_notes()
    pages = {path.relative_to(ROOT).with_suffix("").as_posix() for path in sync_setup_cell.chapters()}
    assert set(notes) == pages
    assert all(isinstance(note, str) and note.strip() for note in notes.values())
    for path in sync_setup_cell.chapters():
        header = path.read_text().split("\n---\n", 1)[0]
        meta = yaml.safe_load(header.removeprefix("---\n"))
        assert meta["myst"]["substitutions"]["full_scale"] == notes[path.relative_to(ROOT).with_suffix("").as_posix()]


def test_the_scale_note_is_replaced_not_repeated():
    page = "---\njupytext: {}\n---\n\n# T\n"
    once = sync_setup_cell.with_scale_note(page, "a", "x.md")
    twice = sync_setup_cell.with_scale_note(once, "b: with a colon", "x.md")
    assert twice.count("full_scale") == 1
    assert yaml.safe_load(twice.split("\n---\n", 1)[0].removeprefix("---\n"))["myst"]["substitutions"] == \
        {"full_scale": "b: with a colon"}
