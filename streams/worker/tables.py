"""Portfolio state in the changelog-backed `exposure` and `streak` tables.

Both are keyed by portfolio id (bytes) and hold canonical JSON. They are written
only here, from the agents, while an input event of the portfolio's partition
is being processed, so each write goes to that partition's changelog (and,
under exactly-once, into that partition's transaction).
"""

from __future__ import annotations

from typing import Any

from streams import decimals
from streams.config import SizingConfig
from streams.engine import PortfolioState
from streams.engine.state import exposure_from_wire, streak_from_wire, to_wire


class TableStore:
    """The StateStore of the worker: reads and writes the two tables."""

    def __init__(self, exposure: Any, streak: Any, config: SizingConfig) -> None:
        self.exposure = exposure
        self.streak = streak
        self.config = config
        self._loaded: tuple[str, PortfolioState] | None = None

    def load(self, portfolio_id: str) -> PortfolioState:
        key = portfolio_id.encode()
        raw_exposure = self.exposure.get(key)
        raw_streak = self.streak.get(key)
        state = PortfolioState(
            exposure_from_wire(decimals.loads(raw_exposure) if raw_exposure else None),
            streak_from_wire(decimals.loads(raw_streak) if raw_streak else None, self.config),
        )
        self._loaded = (portfolio_id, state)
        return state

    def save(self, portfolio_id: str, state: PortfolioState) -> None:
        """Write the tables whose value changed since `load` (the engine shares unchanged parts)."""
        before = self._loaded[1] if self._loaded and self._loaded[0] == portfolio_id else None
        exposure, streak = to_wire(state)
        key = portfolio_id.encode()
        if before is None or state.exposure is not before.exposure:
            self.exposure[key] = decimals.dumps(exposure).encode()
        if before is None or state.streak is not before.streak:
            self.streak[key] = decimals.dumps(streak).encode()
        self._loaded = (portfolio_id, state)
