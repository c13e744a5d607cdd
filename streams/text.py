"""Counts in what the commands print: "1 partition", "6 partitions"."""

from __future__ import annotations


def counted(number: int, noun: str, plural: str | None = None, spec: str = "") -> str:
    """`number` then `noun`, in the plural unless `number` is 1 (`plural`, by default
    `noun` + "s"); `spec` formats the number ("," for thousands separators)."""
    return f"{number:{spec}} {noun if number == 1 else plural or noun + 's'}"


def table(header: tuple[str, ...], rows: list[tuple[object, ...]], indent: str = "") -> list[str]:
    """Rows under a header as aligned lines: each column as wide as its widest cell,
    columns of numbers right-aligned, None as an empty cell."""
    cells = [tuple("" if cell is None else str(cell) for cell in row) for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [bool(rows) and all(_numeric(row[i]) for row in cells[1:]) for i in range(len(header))]
    return [indent + "  ".join(cell.rjust(width) if numeric[i] else cell.ljust(width)
                               for i, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in cells]


def _numeric(text: str) -> bool:
    """A decimal number, possibly negative or a percentage, or nothing."""
    return text == "" or text.removeprefix("-").removesuffix("%").replace(".", "", 1).isdigit()
