"""The library's version, and the check the book's chapters make before they run.

A chapter is written against one version of the library. Opened elsewhere (Colab, an old
environment) it may meet another; :func:`require_version` turns that into a clear error at the
top of the notebook instead of a confusing failure halfway through it.
"""

from __future__ import annotations

__version__ = "0.3.0"


def _parse(version: str, argument: str) -> tuple[int, ...]:
    """``"0.2.0"`` -> ``(0, 2, 0)``; anything after a ``+`` or a non-numeric part is refused."""
    text = version.split("+", 1)[0]
    parts = text.split(".")
    if not text or not all(part.isdigit() for part in parts):
        raise ValueError(f"{argument} must be a version like '0.2.0' (numbers separated by dots), got {version!r}")
    return tuple(int(part) for part in parts)


def require_version(minimum: str, installed: str = __version__) -> str:
    """Fail unless the installed library is at least ``minimum``; return the installed version.

    Versions compare part by part as integers (``"0.10.0" > "0.9.1"``); missing parts count as 0.

    Raises:
        ValueError: ``minimum`` or ``installed`` is not a dotted version.
        RuntimeError: the library is older than ``minimum``; the message says how to upgrade.
    """
    need, have = _parse(minimum, "minimum"), _parse(installed, "installed")
    width = max(len(need), len(have))
    if have + (0,) * (width - len(have)) < need + (0,) * (width - len(need)):
        raise RuntimeError(
            f"this page needs ocnet_edu >= {minimum}, but ocnet_edu {installed} is installed; "
            "upgrade it (pip install --upgrade 'ocnet_edu[book] @ git+<repository URL>', or `make install` "
            "in a clone) and restart the kernel")
    return installed
