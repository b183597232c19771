"""Tables for the line magics (runs, agents, workflows, SQL results): a pandas DataFrame when
pandas is installed, else a small table that renders as HTML and as text."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Table:
    """A small table for notebooks without pandas: HTML and text renderings of the same rows."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = False

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in self.rows
        )
        note = "<p><i>truncated: more rows matched</i></p>" if self.truncated else ""
        return f"<table class='clarion-table'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        cells = [self.columns, *[[_cell(v) for v in row] for row in self.rows]]
        widths = [max(len(str(r[i])) for r in cells) for i in range(len(self.columns))]
        lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
        printer.text("\n".join(lines) + ("\n(truncated: more rows matched)" if self.truncated else ""))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def table(columns: list[str], rows: list[list[Any]], truncated: bool = False) -> Any:
    try:
        import pandas as pd
    except ImportError:
        return Table(columns, rows, truncated)
    frame = pd.DataFrame(rows, columns=columns)
    frame.attrs["truncated"] = truncated
    return frame
