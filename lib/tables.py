"""Small tables for the chapters: HTML in the book and in Jupyter, aligned text
elsewhere.

    display(Table(["kernel", "accuracy"], [["Softmax", "0.851"], ["Gaussian",
    "0.847"]])) Table(header, rows).markdown()        # the same table as Markdown
    source

Cells are shown with ``str``; in HTML they are escaped, so a cell is never read as
markup.
"""

from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

__all__ = ["Table", "fmt_cell", "settings_table"]


def fmt_cell(value: Any) -> str:
    """A settings value as a table cell: None -> "none", lists joined by ", ", ints with
    thousands separators (20,000), everything else ``str``."""
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_cell(v) for v in value) if len(value) else "none"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


class Table:
    """A table with a header row. header: (C,) labels; rows: (R, C) cells of any
    type."""

    def __init__(self, header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> None:
        if isinstance(header, str) or not len(header):
            raise ValueError(
                f"header must be a non-empty sequence of column labels, got {header!r}"
            )
        self.header = [str(h) for h in header]
        self.rows = []
        for i, row in enumerate(rows):
            if isinstance(row, str) or len(row) != len(self.header):
                raise ValueError(
                    f"rows[{i}] must have {len(self.header)} cells (one per column),"
                    f" got {row!r}"
                )
            self.rows.append([str(v) for v in row])

    def _repr_html_(self) -> str:
        cell = lambda tag, v: f"<{tag}>{html.escape(v)}</{tag}>"  # noqa: E731
        head = "".join(cell("th", h) for h in self.header)
        body = "".join(
            "<tr>" + "".join(cell("td", v) for v in row) + "</tr>" for row in self.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __repr__(self) -> str:
        lines = [self.header, *self.rows]
        widths = [max(len(v) for v in col) for col in zip(*lines)]
        return "\n".join(
            "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in lines
        )

    def markdown(self) -> str:
        """The table as Markdown source (``|`` in a cell is escaped)."""
        esc = lambda v: v.replace("|", "\\|")  # noqa: E731
        lines = [
            "| " + " | ".join(map(esc, self.header)) + " |",
            "|" + "---|" * len(self.header),
        ]
        lines += ["| " + " | ".join(map(esc, row)) + " |" for row in self.rows]
        return "\n".join(lines)


# --- settings of a chapter: the default and full values side by side ---------------


def settings_table(settings: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Table:
    """The settings of a chapter's two modes as a table: one row per (part, setting).

    settings: {"default": {part: {key: value}}, "full": {part: {key: value}}}, with the
    same parts and keys in both; columns part, setting, default, full (``fmt_cell``).
    Raises ValueError when a mode is missing or the two modes' keys differ.
    """
    if not isinstance(settings, Mapping) or set(settings) != {"default", "full"}:
        raise ValueError(
            "settings must be a mapping with exactly the keys 'default' and 'full', "
            f"got {settings!r}"
        )
    default, full = settings["default"], settings["full"]
    keys = lambda mode: [(g, k) for g, part in mode.items() for k in part]  # noqa: E731
    if sorted(keys(default)) != sorted(keys(full)):
        raise ValueError(
            "settings['default'] and settings['full'] must have the same parts and "
            f"keys; they differ in {sorted(set(keys(default)) ^ set(keys(full)))}"
        )
    return Table(
        ["part", "setting", "default", "full"],
        [(g, k, fmt_cell(default[g][k]), fmt_cell(full[g][k]))
         for g, k in keys(default)],
    )
