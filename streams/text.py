"""Counts in what the commands print: "1 partition", "6 partitions"."""

from __future__ import annotations


def counted(number: int, noun: str, plural: str | None = None, spec: str = "") -> str:
    """`number` then `noun`, in the plural unless `number` is 1 (`plural`, by default
    `noun` + "s"); `spec` formats the number ("," for thousands separators)."""
    return f"{number:{spec}} {noun if number == 1 else plural or noun + 's'}"
