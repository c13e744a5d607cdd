"""`sizer control`: operator commands on the `controls` topic, and the state they leave.

A command is published keyed by its portfolio, so it lands on the partition of
the portfolio's signals and fills and is applied by the worker that owns them,
in the same batch and transaction as the inputs around it. `send` then waits
until the worker group has committed past the command's offset (under
exactly-once, that commit is the transaction that applied it) and reads the
portfolio's resulting control state from the worker's `controls` table changelog.
"""

from __future__ import annotations

import asyncio
import getpass
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.wire import decimals
from streams.wire.admission import admit_message, home_partition
from streams.engine.state import controls_from_wire, streak_from_wire
from streams.errors import ConfigError, InvalidMessage, SizerError
from streams.kafka.io import read_topic, start_or_close
from streams.kafka.settings import ConnectionSettings
from streams.wire.models import format_event_time
from streams.kafka.topics import TopicSet


class CommandNotApplied(SizerError):
    """The worker group did not apply a published command in time."""


def command(kind: str, portfolio_id: str, reason: str, operator: str | None = None, **fields: Any) -> dict[str, Any]:
    """A command's wire value (`models.Halt`, `Resume`, `Release` or `AdjustEquity`),
    validated as the worker will validate it. Raises InvalidMessage naming the field."""
    value = {"command_id": f"c-{uuid.uuid4().hex}", "portfolio_id": portfolio_id,
             "ts": int(time.time() * 1000), "type": kind, "operator": operator or getpass.getuser(),
             "reason": reason, **{key: v for key, v in fields.items() if v is not None}}
    admit_message("controls", decimals.loads(decimals.dumps(value)), max_future_skew_ms=0)
    return value


def changelog(app_id: str, table: str) -> str:
    """The changelog topic of a worker table (faust's naming)."""
    return f"{app_id}-{table}-changelog"


async def send(kafka: ConnectionSettings, topics: TopicSet, value: dict[str, Any], timeout_s: float = 60.0) -> tuple[int, int]:
    """Publish one command and wait until the worker group has applied it.
    Returns its (partition, offset). Raises CommandNotApplied after `timeout_s`."""
    producer = AIOKafkaProducer(**kafka.client("control"), acks="all", enable_idempotence=True)
    await start_or_close(producer)
    try:
        key = value["portfolio_id"].encode()
        sent = await producer.send_and_wait(topics.name("controls"), decimals.dumps(value).encode(), key=key,
                                            partition=home_partition(key, topics["controls"].partitions))
    finally:
        await producer.stop()
    admin = AIOKafkaAdminClient(**kafka.client("control"))
    await start_or_close(admin)
    try:
        tp = TopicPartition(sent.topic, sent.partition)
        deadline = time.monotonic() + timeout_s
        while True:
            committed = await admin.list_consumer_group_offsets(kafka.app_id, partitions=[tp])
            position = committed.get(tp)
            if position is not None and position.offset > sent.offset:
                return sent.partition, sent.offset
            if time.monotonic() > deadline:
                raise CommandNotApplied(
                    f"command {value['command_id']} is at {sent.topic}[{sent.partition}]@{sent.offset}, but worker "
                    f"group {kafka.app_id} has not applied it within {timeout_s:.0f} s (is a worker running?)")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def status(kafka: ConnectionSettings, topics: TopicSet, portfolio_id: str | None = None) -> list[dict[str, Any]]:
    """Each portfolio's control state as the worker group's tables hold it: halted or
    not (with who, why and when), the last command's offset, and equity."""
    width = topics["signals"].partitions
    names = [changelog(kafka.app_id, "controls"), changelog(kafka.app_id, "streak")]
    admin = AIOKafkaAdminClient(**kafka.client("control"))
    await start_or_close(admin)
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()

    async def read(name: str) -> list[Any]:
        # a changelog the workers have not created yet (no worker of the group has run): no state
        return await read_topic(kafka.for_role("control"), name, width) if name in existing else []

    controls, streaks = await asyncio.gather(*(read(name) for name in names))
    latest: dict[str, dict[str, Any]] = {}
    for record in controls:  # in partition then offset order: the last value of a key wins
        if record.key is not None and record.value is not None:
            latest.setdefault(record.key.decode(), {})["controls"] = decimals.loads(record.value)
    for record in streaks:
        if record.key is not None and record.value is not None:
            latest.setdefault(record.key.decode(), {})["streak"] = decimals.loads(record.value)
    rows = []
    for portfolio in sorted(latest):
        if portfolio_id is not None and portfolio != portfolio_id:
            continue
        state = controls_from_wire(latest[portfolio].get("controls"))
        equity = latest[portfolio].get("streak")
        halt = state.halt
        rows.append({
            "portfolio_id": portfolio, "halted": halt is not None,
            "halt": None if halt is None else {"reason": halt.reason, "command_id": halt.command_id,
                                               "operator": halt.operator, "detail": halt.text,
                                               "since": format_event_time(halt.ts)},
            "last_control_offset": state.last_control_offset,
            # the fill window is not read here (its chunks live in the `windows` table)
            "equity": decimals.canonical(streak_from_wire({**equity, "seen_fills": []}, _NoConfig()).equity)
            if equity else None,
        })
    if portfolio_id is not None and not rows:
        rows.append({"portfolio_id": portfolio_id, "halted": False, "halt": None, "last_control_offset": None,
                     "equity": None})
    return rows


class _NoConfig:
    """streak_from_wire's config is read only for a missing record, which is never passed here."""

    starting_equity = None


def validate_command(kind: str, portfolio_id: str, reason: str, operator: str | None, **fields: Any) -> dict[str, Any]:
    """`command`, with an invalid command as a SizerError the CLI prints as one line."""
    try:
        return command(kind, portfolio_id, reason, operator, **fields)
    except InvalidMessage as exc:
        raise CommandRefused(f"invalid {kind} command: {exc.detail}") from exc


class CommandRefused(ConfigError):
    """The command would be refused by the worker (it is not sent)."""
