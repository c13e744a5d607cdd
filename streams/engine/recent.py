"""A bounded window of recently seen ids, for dedupe, as an immutable value.

Ids are kept in chunks so that remembering one more id copies one small chunk
and shares the rest: adding and looking up stay cheap with a window of
thousands, and the value can live in a changelog-backed table.
"""

from __future__ import annotations

from itertools import repeat
from typing import NamedTuple

CHUNK = 64


class RecentIds(NamedTuple):
    """At least the `capacity` most recent ids (up to one chunk more), oldest chunk first."""

    chunks: tuple[frozenset[str], ...] = ()

    def __contains__(self, item: object) -> bool:
        # the chunks are frozensets (`add`, `from_wire`): one C-level pass over them
        return any(map(frozenset.__contains__, self.chunks, repeat(item)))

    def __len__(self) -> int:
        return sum(map(len, self.chunks))

    def add(self, item: str, capacity: int) -> "RecentIds":
        """A window that also holds `item`, forgetting the oldest chunk once `capacity` is covered without it."""
        size = min(CHUNK, capacity)
        chunks = self.chunks
        if chunks and len(chunks[-1]) < size:
            chunks = chunks[:-1] + (chunks[-1] | {item},)
        else:
            chunks = chunks + (frozenset((item,)),)
        if len(chunks) * size > capacity:  # only then can the oldest chunk be spare
            total = sum(map(len, chunks))
            while len(chunks) > 1 and total - len(chunks[0]) >= capacity:
                total -= len(chunks[0])
                chunks = chunks[1:]
        return RecentIds(chunks)

    def to_wire(self) -> list[list[str]]:
        return [sorted(chunk) for chunk in self.chunks]

    @classmethod
    def from_wire(cls, data: list[list[str]]) -> "RecentIds":
        return cls(tuple(frozenset(chunk) for chunk in data))
