"""GitHub-flavoured markdown tables, for a pull-request comment or a CI job summary
(`$GITHUB_STEP_SUMMARY`): `--format markdown` of `report --compare` and `trends`."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["cell", "table"]


def cell(value) -> str:
    """One table cell: on one line, pipes escaped (a task name may hold one).

    >>> cell("a|b\\nc")
    'a\\\\|b c'
    """
    return " ".join(str(value).split()).replace("|", "\\|")


def table(headers: Sequence[str], right: Sequence[bool], rows: Sequence[Sequence]) -> list[str]:
    """The lines of a table: a header, its alignment row (`right` columns right-aligned,
    as numbers read best), then one line per row.

    >>> print("\\n".join(table(["Task", "n"], [False, True], [["sim", 3]])))
    | Task | n |
    | --- | ---: |
    | sim | 3 |
    """
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |"]
    lines.append("| " + " | ".join("---:" if r else "---" for r in right) + " |")
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines
