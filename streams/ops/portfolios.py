"""`sizer portfolios`: the registry of portfolios the workers admit when
registration is on (`SIZER_REQUIRE_REGISTRATION`, `worker.registry`).

A registration is a record keyed by the portfolio id on the compacted registry
topic (`sizer-portfolios`), its value saying who registered it, when and why; a
deregistration is a tombstone. Workers read the topic continuously: a portfolio
registered before its first input is admitted.
"""

from __future__ import annotations

import asyncio
import getpass
import time
from typing import Any

from aiokafka import AIOKafkaProducer
from pydantic import TypeAdapter, ValidationError

from streams.errors import ConfigError
from streams.kafka.io import read_topic, start_or_close
from streams.kafka.settings import ConnectionSettings
from streams.kafka.topics import TopicSet
from streams.wire import decimals
from streams.wire.models import Id

_ID = TypeAdapter(Id)


async def change(kafka: ConnectionSettings, topics: TopicSet, portfolio_ids: list[str], register: bool,
                 reason: str, operator: str | None = None) -> int:
    """Register (or, `register=False`, deregister) each id; returns how many records were
    written. Raises ConfigError naming an id the workers could never admit."""
    for portfolio_id in portfolio_ids:
        try:
            _ID.validate_python(portfolio_id)
        except ValidationError:
            raise ConfigError(f"portfolio id {portfolio_id[:80]!r}: must be 1 to 256 characters without control "
                              f"characters (the workers could never admit it)") from None
    who = operator or kafka.sasl_username or getpass.getuser()
    producer = AIOKafkaProducer(**kafka.client("control"), acks="all", enable_idempotence=True)
    await start_or_close(producer)
    try:
        sent = []
        for portfolio_id in portfolio_ids:
            value = decimals.dumps({"portfolio_id": portfolio_id, "operator": who, "reason": reason,
                                    "ts": int(time.time() * 1000)}).encode() if register else None
            sent.append(await producer.send(topics.name("portfolios"), value, key=portfolio_id.encode()))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return len(portfolio_ids)


async def registered(kafka: ConnectionSettings, topics: TopicSet) -> list[dict[str, Any]]:
    """The registered portfolios exactly as the workers read them (`PortfolioRegistry.apply`:
    a record with a UTF-8 key registers that id whatever its value, a tombstone removes
    it, a record without such a key names none), each with what its latest
    registration says. The id is always the key's: a value naming another portfolio
    does not register that one, and is shown only as what the record claims."""
    spec = topics["portfolios"]
    latest: dict[str, bytes | None] = {}
    for record in await read_topic(kafka.for_role("control"), spec.name, spec.partitions):
        try:
            portfolio_id = record.key.decode() if record.key is not None else ""
        except UnicodeDecodeError:
            continue
        if portfolio_id:
            latest[portfolio_id] = record.value
    return [_said(pid, value) for pid, value in sorted(latest.items()) if value is not None]


def _said(portfolio_id: str, value: bytes) -> dict[str, Any]:
    """A registration as listed: its id (the key's) and what its value says (who, when,
    why); `unreadable` when the value is no JSON object, `claimed_portfolio_id` when it
    names another portfolio than its key."""
    try:
        said = decimals.loads(value)
    except (UnicodeDecodeError, ValueError):
        said = None
    if not isinstance(said, dict):
        return {"portfolio_id": portfolio_id, "unreadable": True}
    claimed = said.pop("portfolio_id", portfolio_id)
    return {"portfolio_id": portfolio_id, **said,
            **({"claimed_portfolio_id": claimed} if claimed != portfolio_id else {})}
