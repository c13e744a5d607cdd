"""`sizer portfolios list` shows exactly the portfolios the workers admit: the
registry topic read by the workers' own rule (`worker.registry.PortfolioRegistry`),
each under the id of its record's key, whatever the record's value says."""

from __future__ import annotations

import asyncio

from streams.kafka.io import Record
from streams.kafka.settings import ConnectionSettings
from streams.kafka.topics import load_topics
from streams.worker.registry import PortfolioRegistry
from tests.unit.test_partition_integrity import ROOT

RECORDS = [
    (b"p1", b'{"portfolio_id": "p1", "operator": "alice", "reason": "go-live"}'),
    (b"p2", b'{"portfolio_id": "p1-the-cap-is-here", "operator": "mallory", "reason": "forged"}'),  # its key wins
    (b"p3", b"not json"),  # registers p3 all the same, for the worker
    (b"p4", b"null"),  # JSON null is a value, not a tombstone: p4 is registered
    (b"p5", b'{"portfolio_id": "p5"}'), (b"p5", None),  # deregistered
    (b"\xff\xfe", b'{"portfolio_id": "x"}'),  # no UTF-8 key: no portfolio
    (b"", b'{"portfolio_id": "y"}'),  # an empty key: no portfolio
    (None, b'{"portfolio_id": "z"}'),
]


def test_the_list_is_what_the_workers_admit_under_each_records_key(monkeypatch):
    from streams.ops import portfolios

    records = [Record("p-sizer-portfolios", 0, offset, key, value, (), 0)
               for offset, (key, value) in enumerate(RECORDS)]

    async def read_topic(*args, **kwargs):
        return records

    monkeypatch.setattr(portfolios, "read_topic", read_topic)
    listed = asyncio.run(portfolios.registered(ConnectionSettings(), load_topics(ROOT / "topics" / "topics.toml", "p-")))

    worker = PortfolioRegistry(ConnectionSettings().for_role("test"), "p-sizer-portfolios", 1)
    for record in records:
        worker.apply(record.key, record.value, record.offset)
    assert [entry["portfolio_id"] for entry in listed] == sorted(worker.registered) == ["p1", "p2", "p3", "p4"]
    by_id = {entry["portfolio_id"]: entry for entry in listed}
    assert by_id["p1"]["operator"] == "alice" and by_id["p2"]["operator"] == "mallory"
    assert by_id["p2"]["claimed_portfolio_id"] == "p1-the-cap-is-here" and "claimed_portfolio_id" not in by_id["p1"]
    assert by_id["p3"] == {"portfolio_id": "p3", "unreadable": True}


class _Topic:
    """The registry topic's consumer as the view's catch-up uses it: its end offset is
    1 (one registration, written just now); every round trip counted."""

    def __init__(self, tp) -> None:
        self.tp, self.round_trips = tp, 0

    async def end_offsets(self, partitions):
        self.round_trips += 1
        return {self.tp: 1}


def test_a_portfolio_registered_just_before_its_first_input_is_admitted_during_a_flood():
    import time

    import pytest
    from aiokafka import TopicPartition

    from streams.errors import InvalidMessage

    registry = PortfolioRegistry(ConnectionSettings().for_role("test"), "p-sizer-portfolios", 1)
    tp = TopicPartition("p-sizer-portfolios", 0)
    registry._targets, registry._applied = {tp: 0}, {tp: 0}
    registry._consumer = topic = _Topic(tp)

    async def scenario() -> None:
        # an invented id of a flood made the view catch up a moment ago, before desk-9's
        # registration was written; the batch holding desk-9's first signal was fetched since
        registry._last_refresh = time.monotonic() - 0.01
        fetched = time.monotonic()

        async def follow() -> None:  # the view's own consumer reaches the registration
            await asyncio.sleep(0.05)
            registry.apply(b"desk-9", b"{}", 0)
            registry._applied[tp] = 1
            async with registry._progress:
                registry._progress.notify_all()

        following = asyncio.create_task(follow())
        await registry.check("desk-9", since=fetched)
        await following
        # the rest of the flood in that batch: refused with no further round trip
        for n in range(100):
            with pytest.raises(InvalidMessage) as refused:
                await registry.check(f"invented-{n}", since=fetched)
            assert refused.value.code == "UNKNOWN_PORTFOLIO"

    asyncio.run(scenario())
    assert topic.round_trips == 1
