"""A bounded window of recently seen ids, for dedupe, as an immutable value.

Ids are kept in chunks of at most CHUNK ids, oldest chunk first; the window
forgets a whole chunk at a time. Each chunk is a sorted tuple (its wire form),
and every chunk but the newest is also in one frozenset (`settled`): a lookup is
one set probe and one binary search of the newest chunk, and remembering one
more id copies only the newest chunk (at most CHUNK references) and shares the
rest. The settled set is rebuilt only when a chunk closes or the oldest is
forgotten, once per CHUNK ids. The value can live in a changelog-backed table
(`to_wire`).
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import chain
from typing import Any, NamedTuple

CHUNK = 64

_EMPTY: frozenset[str] = frozenset()


class RecentIds(NamedTuple):
    """At least the `capacity` most recent ids (up to one chunk more), oldest chunk first.

    `chunks`: each a sorted tuple of distinct ids; `settled`: the ids of every chunk
    but the newest (derived from `chunks`, kept to look an id up in one probe)."""

    chunks: tuple[tuple[str, ...], ...] = ()
    settled: frozenset[str] = _EMPTY

    def __contains__(self, item: object) -> bool:
        chunks, settled = self  # one unpacking: a NamedTuple field read is a descriptor call
        if item in settled:
            return True
        if not chunks:
            return False
        newest = chunks[-1]
        at = bisect_left(newest, item)  # type: ignore[type-var]
        return at < len(newest) and newest[at] == item

    def __len__(self) -> int:
        return sum(map(len, self.chunks))

    def add(self, item: str, capacity: int) -> "RecentIds":
        """A window that also holds `item`, forgetting the oldest chunk once `capacity` is covered without it."""
        size = CHUNK if capacity > CHUNK else capacity
        chunks, settled = self
        if chunks and len(chunks[-1]) < size:
            newest = chunks[-1]
            if not newest or item > newest[-1]:  # ids that grow (sequence numbers, times): one copy, no search
                chunks = chunks[:-1] + (newest + (item,),)
            else:
                at = bisect_left(newest, item)
                if newest[at] != item:
                    chunks = chunks[:-1] + (newest[:at] + (item,) + newest[at:],)
        else:
            if chunks:
                settled = settled.union(chunks[-1])
            chunks = chunks + ((item,),)
        if len(chunks) * size > capacity:  # only then can the oldest chunk be spare
            total = sum(map(len, chunks))
            forgotten = False
            while len(chunks) > 1 and total - len(chunks[0]) >= capacity:
                total -= len(chunks[0])
                chunks = chunks[1:]
                forgotten = True
            if forgotten:
                settled = frozenset(chain.from_iterable(chunks[:-1]))
        return _new(RecentIds, (chunks, settled))

    def to_wire(self) -> list[list[str]]:
        return [list(chunk) for chunk in self.chunks]

    @classmethod
    def from_wire(cls, data: list[list[str]]) -> "RecentIds":
        chunks = tuple(tuple(sorted(set(chunk))) for chunk in data)
        return cls(chunks, frozenset(chain.from_iterable(chunks[:-1])))


# builds the record without the NamedTuple constructor's Python frame: this runs once per input
_new: Any = tuple.__new__
