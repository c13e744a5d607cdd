"""Progress for long commands: one line on a terminal, silent elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """`tick(done)` every `every` items shows the count and rate; `note(text)` any stage."""

    def __init__(self, stream: TextIO = sys.stderr, unit: str = "items", total: int | None = None,
                 every: int = 10_000) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.unit = unit
        self.total = total
        self.every = every
        self.started = time.monotonic()

    def note(self, text: str) -> None:
        if self.enabled:
            self.stream.write(f"\r{text:<60}")
            self.stream.flush()

    def tick(self, done: int) -> None:
        if self.enabled and done % self.every == 0:
            rate = done / max(time.monotonic() - self.started, 1e-9)
            total = f"/{self.total}" if self.total else ""
            self.note(f"{done}{total} {self.unit}, {rate:,.0f}/s")

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
