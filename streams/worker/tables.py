"""Portfolio state in the changelog-backed `exposure`, `streak`, `controls` and
`windows` tables.

All are keyed by portfolio id (bytes; `windows` by portfolio, window and chunk
number) and hold canonical JSON. They are written only here, from the agents,
while an input event of the portfolio's partition is current, so each write goes
to that partition's changelog (and, under exactly-once, into that partition's
transaction).

Within a batch the store is write-back: a portfolio touched by many inputs is
decoded once and written once, at the end of the batch, with the last of its
events current. Between batches the states last written or read are kept
decoded: only this worker writes the portfolios of its partitions, and the
worker forgets them all (`forget`) whenever partitions move, before recovery can
change a table under it.

The dedupe windows (`Exposure.seen_signals`, `Streak.seen_fills`: up to 1,024 ids
each by default) are most of a portfolio's state, and they change with every
input. Their chunks (`engine.recent.RecentIds`) other than the newest never
change, so each is written once, under its own key in `windows`, and deleted
when the window lets it go; the `exposure` and `streak` records carry only the
newest chunk and the numbers of the others (`CHUNKED`). Written whole, a
portfolio with full windows wrote about 46 KB to its changelogs per batch.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from streams.wire import decimals
from streams.config import SizingConfig
from streams.engine import PortfolioState
from streams.faust_compat.outputs import stored_value
from streams.engine.state import (
    Controls, Reservation, controls_from_wire, controls_to_wire, ended_order_to_wire, exposure_from_wire,
    exposure_to_wire, streak_from_wire, streak_to_wire,
)

log = logging.getLogger("streams.worker")

# A window by reference is `<window>_chunks` in its record, and `<window>` itself is
# null: a worker of an earlier release, which reads `<window>` as a list of chunks,
# then fails on the record (its inputs dead-lettered as PROCESSING_ERROR, original
# bytes kept) instead of reading the reference as a window and deciding resent
# inputs again (docs: production Kafka, "Upgrading").
CHUNKED = "_chunks"


def window_key(portfolio_id: str, window: str, number: int) -> bytes:
    """The `windows` table key of chunk `number` of one portfolio's window."""
    return f"{portfolio_id}\x1f{window}\x1f{number}".encode()


class TableStore:
    """The StateStore of the worker: reads and writes the four tables."""

    def __init__(self, exposure: Any, streak: Any, controls: Any, windows: Any, config: SizingConfig, outputs: Any,
                 current_event: Callable[[], Any]) -> None:
        self.exposure = exposure
        self.streak = streak
        self.controls = controls
        self.windows = windows
        self.config = config
        self.outputs = outputs  # faust_compat.outputs.Outputs: writes table entries
        self.current_event = current_event  # the input being processed (the batch sets it)
        # portfolio -> (its state now, the last event that changed it) in this batch
        self._batch: dict[str, tuple[PortfolioState, Any]] = {}
        # portfolio -> its state as in the tables, decoded
        self._stored: dict[str, PortfolioState] = {}
        # (portfolio, window) -> (number of its oldest stored chunk, the chunks stored under
        # `windows`, oldest first: the same objects as in the stored state's window)
        self._chunks: dict[tuple[str, str], tuple[int, tuple[Any, ...]]] = {}
        # portfolio -> order id -> (an ended order, its `ended_orders` entry encoded), for a
        # portfolio last written with two ended orders or more: an ended order never changes
        # and stays in the mapping for up to ENDED_ORDERS_KEPT writes, so it is encoded once
        self._ended: dict[str, dict[str, tuple[Reservation, bytes]]] = {}

    def load(self, portfolio_id: str) -> PortfolioState:
        pending = self._batch.get(portfolio_id)
        if pending is not None:
            return pending[0]
        state = self._stored.get(portfolio_id)
        if state is None:
            key = portfolio_id.encode()
            raw_exposure = stored_value(self.exposure, key)
            raw_streak = stored_value(self.streak, key)
            raw_controls = stored_value(self.controls, key)
            exposure = decimals.loads(raw_exposure) if raw_exposure else None
            streak = decimals.loads(raw_streak) if raw_streak else None
            refs = {"seen_signals": self._read_window(portfolio_id, "seen_signals", exposure),
                    "seen_fills": self._read_window(portfolio_id, "seen_fills", streak)}
            state = PortfolioState(
                exposure_from_wire(exposure),
                streak_from_wire(streak, self.config, portfolio_id),
                controls_from_wire(decimals.loads(raw_controls) if raw_controls else None),
            )
            for window, ref in refs.items():
                if ref is not None:
                    first, count, complete = ref
                    # with a chunk missing, the numbers no longer line up: the next write
                    # deletes them all and stores the window again
                    stored = _window_of(state, window).chunks[:-1] if complete else (None,) * count
                    self._chunks[(portfolio_id, window)] = (first, stored)
            self._stored[portfolio_id] = state
        self._batch[portfolio_id] = (state, None)
        return state

    def _read_window(self, portfolio_id: str, window: str, record: dict[str, Any] | None
                     ) -> tuple[int, int, bool] | None:
        """Put the chunks of a record's window back in place (as written before windows
        had their own table: a list of chunks). Returns (number of its oldest stored
        chunk, how many are stored, whether every one was found), or None for a record
        without a reference (none, or written before)."""
        if not record:
            return None
        ref = record.get(window + CHUNKED)
        if ref is None:
            return None
        first, count = ref["first"], ref["closed"]
        chunks = []
        complete = True
        for number in range(first, first + count):
            raw = stored_value(self.windows, window_key(portfolio_id, window, number))
            if raw is None:  # written in another topic's changelog: lost only with a crash at-least-once
                log.warning("portfolio %s: chunk %d of its %s window is missing; those ids are forgotten",
                            portfolio_id, number, window)
                complete = False
                continue
            chunks.append(decimals.loads(raw))
        if ref["open"]:
            chunks.append(ref["open"])
        record[window] = chunks
        return first, count, complete

    def save(self, portfolio_id: str, state: PortfolioState) -> None:
        self._batch[portfolio_id] = (state, self.current_event())

    def changed(self) -> list[tuple[str, Any]]:
        """Portfolios changed in this batch, with the event to write them under."""
        return [(portfolio_id, event) for portfolio_id, (_, event) in self._batch.items() if event is not None]

    def touched(self) -> list[tuple[str, PortfolioState]]:
        """Every portfolio read in this batch, with its state now."""
        return [(portfolio_id, state) for portfolio_id, (state, _) in self._batch.items()]

    async def write(self, portfolio_id: str) -> None:
        """Write one changed portfolio (its event must be current); only the tables whose
        value changed (the engine shares unchanged parts), each window's chunks first."""
        state, _ = self._batch[portfolio_id]
        stored = self._stored.get(portfolio_id)
        key = portfolio_id.encode()
        # the windows go by reference: not sorted and encoded whole here
        if stored is None or state.exposure is not stored.exposure:
            exposure = exposure_to_wire(state.exposure, window=False,
                                        ended_orders=self._ended_orders(portfolio_id, state.exposure.ended_orders))
            exposure["seen_signals" + CHUNKED] = await self._write_window(portfolio_id, "seen_signals", state)
            await self.outputs.put(self.exposure, key, decimals.dumps(exposure).encode())
        if stored is None or state.streak is not stored.streak:
            streak = streak_to_wire(state.streak, window=False)
            streak["seen_fills" + CHUNKED] = await self._write_window(portfolio_id, "seen_fills", state)
            await self.outputs.put(self.streak, key, decimals.dumps(streak).encode())
        if (stored is None and state.controls != Controls()) or (
                stored is not None and state.controls is not stored.controls):
            await self.outputs.put(self.controls, key, decimals.dumps(controls_to_wire(state.controls)).encode())
        self._stored[portfolio_id] = state

    def _ended_orders(self, portfolio_id: str, ended: Any) -> Any:
        """The exposure's `ended_orders` list encoded from the entries already encoded for
        this portfolio, the new ones encoded now (the same bytes as `dumps` of the list);
        None, to be encoded with the rest of the value, for fewer than two."""
        if len(ended) < 2:
            self._ended.pop(portfolio_id, None)
            return None
        known = self._ended.get(portfolio_id, {})
        entries: dict[str, tuple[Reservation, bytes]] = {}
        for order_id, order in ended.items():
            entry = known.get(order_id)
            if entry is None or entry[0] is not order:
                # encoded to str, then bytes: a bytes object orjson returns holds a buffer of
                # about 4 KB whatever its length (1 GB at 10,000 portfolios kept here)
                entry = (order, decimals.dumps(ended_order_to_wire(order_id, order)).encode())
            entries[order_id] = entry
        self._ended[portfolio_id] = entries
        return decimals.encoded(b"[" + b",".join(raw for _, raw in entries.values()) + b"]")

    async def _write_window(self, portfolio_id: str, window: str, state: PortfolioState) -> dict[str, Any]:
        """Write the chunks of a window not stored yet, delete those it let go, and
        return its reference: {"first": number of the oldest stored chunk, "closed": how
        many are stored, "open": the newest chunk's ids, sorted}. Every chunk but the
        newest is stored; a chunk is matched to a stored one by identity (chunks are
        shared from one window value to the next, never changed)."""
        chunks = _window_of(state, window).chunks
        closed = chunks[:-1]
        first, stored = self._chunks.get((portfolio_id, window), (0, ()))
        # the window lets go of its oldest chunks only, and keeps the rest in order
        dropped = next((i for i, chunk in enumerate(stored) if closed and chunk is closed[0]), len(stored))
        kept = len(stored) - dropped
        if kept > len(closed) or any(a is not b for a, b in zip(stored[dropped:], closed)):
            dropped, kept = len(stored), 0  # not the same window: store it again
        for number in range(first, first + dropped):
            await self.outputs.put(self.windows, window_key(portfolio_id, window, number), None)
        first += dropped
        for number, chunk in enumerate(closed[kept:], start=first + kept):
            await self.outputs.put(self.windows, window_key(portfolio_id, window, number),
                                   decimals.dumps(sorted(chunk)).encode())
        self._chunks[(portfolio_id, window)] = (first, closed)
        return {"first": first, "closed": len(closed), "open": sorted(chunks[-1]) if chunks else []}

    def end_batch(self) -> None:
        self._batch.clear()

    def forget(self) -> None:
        """Drop the decoded states: partitions are moving (a rebalance began)."""
        self._stored.clear()
        self._chunks.clear()
        self._ended.clear()


def _window_of(state: PortfolioState, window: str) -> Any:
    return state.exposure.seen_signals if window == "seen_signals" else state.streak.seen_fills
