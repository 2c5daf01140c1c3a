"""Tables for the terminal that show every cell whole.

Rich cuts a word wider than its column and ends it with an ellipsis: on an 80-column
terminal a run id, an S3 URI or a snapshot tag came out as ``c9682019…``, which cannot be
copied. These tables fold such a word onto the next line instead.
"""

from __future__ import annotations

from rich.table import Table


def whole_cell_table(*columns: str, title: str | None = None) -> Table:
    """A table with these column headers whose cells wrap (long words fold), never cut."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table
