"""Applies decoded inputs to portfolio state through the engine.

The state store is injected: a dict for offline replay, the changelog-backed
tables in the worker. Both paths run this same code, so a worker and
`sizer replay` decide identically on the same inputs.
"""

from __future__ import annotations

from typing import Any, MutableMapping, Protocol

from streams.config import SizingConfig, settings
from streams.engine import (
    ControlApplied, FillApplied, InputPosition, PortfolioState, Result, apply_control, apply_fill, decide,
)
from streams.wire.models import Instrument, OrderCanceled, OrderFilled, PositionClosed, Signal


class StateStore(Protocol):
    """Where portfolio state lives between inputs."""

    def load(self, portfolio_id: str) -> PortfolioState: ...

    def save(self, portfolio_id: str, state: PortfolioState) -> None: ...


class MemoryStore:
    """Portfolio state in a dict: for offline replay, audit and tests."""

    def __init__(self, config: SizingConfig) -> None:
        self._config = config
        self.states: dict[str, PortfolioState] = {}

    def load(self, portfolio_id: str) -> PortfolioState:
        state = self.states.get(portfolio_id)
        return state if state is not None else PortfolioState.fresh(self._config, portfolio_id)

    def save(self, portfolio_id: str, state: PortfolioState) -> None:
        self.states[portfolio_id] = state


class Processor:
    def __init__(
        self,
        config: SizingConfig,
        store: StateStore,
        instruments: MutableMapping[str, Instrument] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.instruments: MutableMapping[str, Instrument] = {} if instruments is None else instruments

    @property
    def config(self) -> SizingConfig:
        return self._config

    @config.setter
    def config(self, config: SizingConfig) -> None:
        self._config = config
        self._settings = settings(config)  # what the engine reads, as plain attributes

    def on_instrument(self, instrument: Instrument) -> None:
        self.instruments[instrument.symbol] = instrument

    def on_fill(self, fill: OrderFilled | OrderCanceled | PositionClosed, offset: int | None = None) -> FillApplied:
        """Apply a fill event: the new state and what the fill did (`engine.FillOutcome`)."""
        portfolio_id = fill.portfolio_id  # one read of the model's field
        before = self.store.load(portfolio_id)
        result = apply_fill(fill, before, self._settings, offset)
        if result.state is not before:
            self.store.save(portfolio_id, result.state)
        return result

    def on_control(self, command: Any, offset: int | None = None) -> ControlApplied:
        """Apply an operator command: the new state and what it did (`engine.ControlOutcome`)."""
        before = self.store.load(command.portfolio_id)
        result = apply_control(command, before, self._settings, offset)
        if result.state is not before:
            self.store.save(command.portfolio_id, result.state)
        return result

    def on_signal(self, signal: Signal, position: InputPosition = InputPosition()) -> Result:
        portfolio_id = signal.portfolio_id  # one read of the model's field
        before = self.store.load(portfolio_id)
        result = decide(signal, self.instruments.get(signal.symbol), before, self._settings, position)
        if result.state is not before:
            self.store.save(portfolio_id, result.state)
        return result
