"""Tables, labelled lines and JSON for the commands' output (docs/cli.md): every time in UTC with
`Z`, listings cut at `--limit` with a line saying how many more.
"""

from __future__ import annotations

import json
from typing import Any


def print_rows(rows: list[dict[str, Any]], columns: list[str], as_json: bool,
                more: int = 0, headers: list[str] | None = None) -> None:
    """A listing: the JSON contract (an array) with `--json`, else an aligned table of
    `columns` (headed `headers`) and, when the limit left `more` rows out, a line saying so."""
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print_table(rows, columns, headers)
    print_more(more)


def print_more(more: int) -> None:
    """The last line of a listing cut at --limit (text only)."""
    if more > 0:
        print(f"… {more:,} more; use --limit")


def _cell(value: Any) -> str:
    """A value as a table or a labelled line shows it: '-' for nothing, lists joined with
    ', ', yes/no for booleans; never a Python repr."""
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    return str(value)


def print_table(rows: list[dict[str, Any]], columns: list[str],
                 headers: list[str] | None = None) -> None:
    """Aligned columns (`headers` instead of the column names when given)."""
    if not rows:  # a header alone reads like a broken command
        print("(none)")
        return
    table = [headers or columns] + [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def print_labelled(pairs: list[tuple[str, Any]]) -> None:
    """`label  value` lines, the values aligned."""
    width = max(len(label) for label, _ in pairs)
    for label, value in pairs:
        print(f"{label:<{width}}  {_cell(value)}")


def size_text(count: int) -> str:
    """Bytes as people read them: 2.1 MB."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"
