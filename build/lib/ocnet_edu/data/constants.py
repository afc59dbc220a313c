"""The one label constant the whole library shares.

Data sets write it into their label maps, transforms pad labels with it, the losses skip it and
the metrics do not count it: :data:`IGNORE_INDEX` is defined here and imported everywhere else.
"""

from __future__ import annotations

IGNORE_INDEX = 255
"""The label value of pixels that are neither trained on nor evaluated (every data set's
"void"/"unlabeled" pixels, and the padding of a crop)."""

__all__ = ["IGNORE_INDEX"]
