"""The paper's result tables (Tables 1–12 of Sec. 4) as tidy pandas DataFrames.

The numbers are package data, ``ocnet_edu/paper_tables/``, one CSV per table (``table01.csv`` …
``table12.csv``, Table 4 as ``table4.csv``), one row per method × setting; see
``ocnet_edu/paper_tables/README.md`` for the columns of each table and the transcription notes.
They are read with :mod:`importlib.resources`, so an installed wheel has them too.

pandas is imported only when a table is loaded (it is not a core dependency: install the
``book`` or ``test`` extra).

Example::

    >>> from ocnet_edu.paper import load_table
    >>> t5 = load_table(5)
    >>> float(t5.set_index("context_module").loc["asp_oc_isa", "miou_pct"])
    80.01
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from importlib.resources.abc import Traversable

    import pandas

__all__ = ["PAPER_DATA_DIR", "TABLE_NUMBERS", "load_table", "table_path"]

#: ``ocnet_edu/paper_tables/``, the package data that holds the CSV files.
PAPER_DATA_DIR: Traversable = files("ocnet_edu") / "paper_tables"

#: The paper's numbered tables.
TABLE_NUMBERS = tuple(range(1, 13))


def table_path(number: int) -> Traversable:
    """Where Table ``number`` is stored (``table{NN}.csv``; Table 4 is ``table4.csv``): a
    :class:`pathlib.Path` when the package is installed as files (a checkout or a wheel).

    Raises:
        ValueError: ``number`` is not an integer in 1–12.
    """
    if isinstance(number, bool) or not isinstance(number, int) or number not in TABLE_NUMBERS:
        raise ValueError(f"the paper has Tables 1-12; got {number!r}")
    name = "table4.csv" if number == 4 else f"table{number:02d}.csv"
    return PAPER_DATA_DIR / name


def load_table(number: int) -> "pandas.DataFrame":
    """Table ``number`` of the paper as a tidy DataFrame (one row per method × setting).

    Empty cells (values printed as "-", or not applicable) are NaN; the string ``"none"`` of the
    ``context_module`` column (no context module, i.e. the baseline) is kept as a string.

    Args:
        number: the table number, 1–12.

    Raises:
        ValueError: ``number`` is not in 1–12.
        FileNotFoundError: the CSV is missing (the message names the path and the valid numbers).
    """
    path = table_path(number)
    if not path.is_file():
        raise FileNotFoundError(
            f"no data for Table {number}: {path} does not exist "
            f"(valid table numbers: {TABLE_NUMBERS[0]}-{TABLE_NUMBERS[-1]}; "
            f"files are read from {PAPER_DATA_DIR})"
        )
    import pandas as pd

    # Only an empty cell is missing: keep strings such as "none" or "NA" as they are.
    with path.open("rb") as handle:
        return pd.read_csv(handle, keep_default_na=False, na_values=[""])
