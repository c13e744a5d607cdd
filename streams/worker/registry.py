"""Registered portfolios (DESIGN.md, "Production Kafka"): with registration on
(`SIZER_REQUIRE_REGISTRATION`), a signal, fill or command for a portfolio that is
not registered is dead-lettered UNKNOWN_PORTFOLIO, so no producer can grow the
workers' state (a few KB per portfolio, never released) without bound.

A portfolio is registered by a record keyed by its id on the compacted registry
topic (`sizer-portfolios`, written by operators with `sizer portfolios register`;
a tombstone deregisters it), which every worker reads whole like the instruments
(`instruments.TopicView`), or by the per-portfolio settings of the configuration
(`configured`, see `PortfolioRegistry`).
"""

from __future__ import annotations

from typing import Any, Callable

from streams.errors import InvalidMessage
from streams.kafka.settings import ClientConfig
from streams.worker.instruments import TopicView


def unknown_portfolio(portfolio_id: str) -> InvalidMessage:
    """The one refusal of an input whose portfolio is not registered."""
    return InvalidMessage("UNKNOWN_PORTFOLIO", f"portfolio_id: {portfolio_id[:80]!r} is not registered "
                                               f"(sizer portfolios register, or a [portfolios] table of the config)")


class PortfolioRegistry(TopicView):
    """The registered portfolio ids, from the registry topic, plus those the
    configuration's per-portfolio settings name.

    `configured(portfolio_id)`: whether the configuration registers the id: the
    worker passes `SizingConfig.configures`, true for an id a `[portfolios."ID"]`
    table (an exact id or a glob, DESIGN.md "Configuration") names."""

    what = "registered portfolios"

    def __init__(self, client: ClientConfig, topic: str, partitions: int,
                 configured: Callable[[str], bool] = lambda portfolio_id: False, **kwargs: object) -> None:
        super().__init__(client, topic, partitions, **kwargs)
        self.registered: set[str] = set()
        self.configured = configured

    def apply(self, key: bytes | None, value: bytes | None, offset: int, timestamp_ms: int | None = None,
              headers: Any = None) -> bool:
        """A record keyed by a portfolio id registers it; a tombstone deregisters it. A
        record without a UTF-8 key names no portfolio and is skipped."""
        try:
            portfolio_id = key.decode() if key is not None else None
        except UnicodeDecodeError:
            portfolio_id = None
        if not portfolio_id:
            return False
        if value is None:
            if portfolio_id not in self.registered:
                return False
            self.registered.discard(portfolio_id)
            return True
        if portfolio_id in self.registered:
            return False
        self.registered.add(portfolio_id)
        return True

    def loaded(self) -> int:
        return len(self.registered)

    async def check(self, portfolio_id: str, since: float) -> None:
        """Raises UNKNOWN_PORTFOLIO (InvalidMessage) unless the portfolio is registered;
        an id not seen yet first makes the view catch up with the topic, unless it has
        since `since`, when the input's batch was fetched (`TopicView.refresh`): one
        broker round trip per batch, whatever the flood of unknown ids in it, and a
        portfolio registered just before its first input is never refused for a
        catch-up that began before its registration was written."""
        if portfolio_id in self.registered or self.configured(portfolio_id):
            return
        await self.refresh(since)
        if portfolio_id not in self.registered:
            raise unknown_portfolio(portfolio_id)
