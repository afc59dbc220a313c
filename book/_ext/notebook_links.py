"""Sphinx extension: each executed chapter as a notebook in the site, and an "Open in Colab" link.

MyST-NB writes every page it executes to ``<build>/jupyter_execute/<page>.ipynb``, outputs
included. For each such page this extension

* copies that notebook into the site as ``notebooks/<name>.ipynb`` and adds it to the page's
  download menu (".ipynb"), so a reader downloads a notebook that opens in Jupyter, not the
  MyST-Markdown source;
* adds a header button that opens the same notebook in Google Colab, from the branch
  ``notebook_links_branch`` (default ``notebooks``) of the repository set in ``_config.yml``
  (``repository.url``); the book workflow publishes the executed notebooks to that branch
  (scripts/publish_notebooks.sh).

We write this small extension because sphinx-book-theme's own Colab button links to the page's
source file on the default branch, which for MyST-Markdown chapters is a ``.md`` that Colab
cannot open.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

COLAB = "https://colab.research.google.com/github"


def notebook_of(app, pagename: str) -> Path | None:
    """The executed notebook MyST-NB wrote for ``pagename``, or None for a plain page."""
    path = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    return path if path.is_file() else None


def colab_url(repository_url: str, branch: str, name: str) -> str | None:
    """``https://colab.research.google.com/github/<org>/<repo>/blob/<branch>/<name>.ipynb``."""
    parsed = urlparse(repository_url)
    parts = [part for part in parsed.path.split("/") if part]
    if parsed.netloc != "github.com" or len(parts) != 2:
        return None
    org, repo = parts
    return f"{COLAB}/{org}/{repo.removesuffix('.git')}/blob/{branch}/{name}.ipynb"


def add_notebook(app, pagename, templatename, context, doctree):
    """``html-page-context`` handler: copy the executed notebook into the site's download menu."""
    source = notebook_of(app, pagename)
    if source is None:
        return
    name = Path(pagename).name
    target = Path(app.outdir) / "notebooks" / f"{name}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    # sphinx-book-theme lists ``_sources/<ipynb_source>`` in the download menu.
    context["ipynb_source"] = f"../notebooks/{name}.ipynb"


def add_colab_button(app, pagename, templatename, context, doctree):
    """``html-page-context`` handler: the "Open in Colab" header button of a notebook page."""
    if notebook_of(app, pagename) is None:
        return
    repository = app.config.html_theme_options.get("repository_url", "")
    url = colab_url(repository, app.config.notebook_links_branch, Path(pagename).name)
    if url and "header_buttons" in context:
        context["header_buttons"].append({
            "type": "link", "url": url, "text": "Colab", "icon": "fas fa-rocket",
            "tooltip": "Open this chapter as a notebook in Google Colab", "label": "colab-button"})


def setup(app):
    app.add_config_value("notebook_links_branch", "notebooks", "html")
    # Before sphinx-book-theme's add_header_buttons (priority 501), which reads ``ipynb_source``;
    # the Colab button after it, once the theme has made the page's list of header buttons.
    app.connect("html-page-context", add_notebook, priority=499)
    app.connect("html-page-context", add_colab_button, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
