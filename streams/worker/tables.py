"""Portfolio state in the changelog-backed `exposure`, `streak` and `controls` tables.

All are keyed by portfolio id (bytes) and hold canonical JSON. They are written
only here, from the agents, while an input event of the portfolio's partition
is current, so each write goes to that partition's changelog (and, under
exactly-once, into that partition's transaction).

Within a batch the store is write-back: a portfolio touched by many inputs is
decoded once and written once, at the end of the batch, with the last of its
events current. Between batches the states last written or read are kept
decoded: only this worker writes the portfolios of its partitions, and the
worker forgets them all (`forget`) whenever partitions move, before recovery can
change a table under it.
"""

from __future__ import annotations

from typing import Any, Callable

from streams.wire import decimals
from streams.config import SizingConfig
from streams.engine import PortfolioState
from streams.engine.state import (
    Controls, controls_from_wire, controls_to_wire, exposure_from_wire, streak_from_wire, to_wire,
)


class TableStore:
    """The StateStore of the worker: reads and writes the three tables."""

    def __init__(self, exposure: Any, streak: Any, controls: Any, config: SizingConfig, outputs: Any,
                 current_event: Callable[[], Any]) -> None:
        self.exposure = exposure
        self.streak = streak
        self.controls = controls
        self.config = config
        self.outputs = outputs  # faust_compat.outputs.Outputs: writes table entries
        self.current_event = current_event  # the input being processed (the batch sets it)
        # portfolio -> (its state now, the last event that changed it) in this batch
        self._batch: dict[str, tuple[PortfolioState, Any]] = {}
        # portfolio -> its state as in the tables, decoded
        self._stored: dict[str, PortfolioState] = {}

    def load(self, portfolio_id: str) -> PortfolioState:
        pending = self._batch.get(portfolio_id)
        if pending is not None:
            return pending[0]
        state = self._stored.get(portfolio_id)
        if state is None:
            key = portfolio_id.encode()
            raw_exposure = self.exposure.get(key)
            raw_streak = self.streak.get(key)
            raw_controls = self.controls.get(key)
            state = PortfolioState(
                exposure_from_wire(decimals.loads(raw_exposure) if raw_exposure else None),
                streak_from_wire(decimals.loads(raw_streak) if raw_streak else None, self.config),
                controls_from_wire(decimals.loads(raw_controls) if raw_controls else None),
            )
            self._stored[portfolio_id] = state
        self._batch[portfolio_id] = (state, None)
        return state

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
        value changed (the engine shares unchanged parts)."""
        state, _ = self._batch[portfolio_id]
        stored = self._stored.get(portfolio_id)
        exposure, streak = to_wire(state)
        key = portfolio_id.encode()
        if stored is None or state.exposure is not stored.exposure:
            await self.outputs.put(self.exposure, key, decimals.dumps(exposure).encode())
        if stored is None or state.streak is not stored.streak:
            await self.outputs.put(self.streak, key, decimals.dumps(streak).encode())
        if (stored is None and state.controls != Controls()) or (
                stored is not None and state.controls is not stored.controls):
            await self.outputs.put(self.controls, key, decimals.dumps(controls_to_wire(state.controls)).encode())
        self._stored[portfolio_id] = state

    def end_batch(self) -> None:
        self._batch.clear()

    def forget(self) -> None:
        """Drop the decoded states: partitions are moving (a rebalance began)."""
        self._stored.clear()
