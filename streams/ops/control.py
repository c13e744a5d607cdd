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
from streams.engine.state import controls_from_wire, drawdown_shown, streak_from_wire
from streams.errors import ConfigError, InvalidMessage, SizerError
from streams.kafka.changelogs import read_tables
from streams.kafka.io import start_or_close
from streams.kafka.settings import ConnectionSettings
from streams.wire.models import format_event_time
from streams.kafka.topics import TopicSet, require_topics


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


async def send(kafka: ConnectionSettings, topics: TopicSet, value: dict[str, Any], timeout_s: float = 60.0) -> tuple[int, int]:
    """Publish one command and wait until the worker group has applied it.
    Returns its (partition, offset). Raises TopicMismatch when the `controls` topic
    is missing, KafkaUnavailable when this principal may not write it,
    CommandNotApplied after `timeout_s`."""
    from streams.kafka.schema_registry import product_framing

    client = kafka.for_role("control")
    await require_topics(client, [topics.name("controls")], "Write")
    framing = await product_framing(kafka, topics)  # the Confluent wire format with a Schema Registry
    producer = AIOKafkaProducer(**client.options(acks="all", enable_idempotence=True))
    await start_or_close(producer)
    try:
        key = value["portfolio_id"].encode()
        framed = framing.written("controls", decimals.dumps(value).encode())
        sent = await producer.send_and_wait(topics.name("controls"), framed, key=key,
                                            partition=home_partition(key, topics["controls"].partitions))
    finally:
        await producer.stop()
    await wait_applied(kafka, {TopicPartition(sent.topic, sent.partition): sent.offset}, timeout_s,
                       f"command {value['command_id']}")
    return sent.partition, sent.offset


def applied_row(value: dict[str, Any], partition: int, offset: int, row: dict[str, Any]) -> dict[str, Any]:
    """The portfolio's control state `row` (`status`) once the group has committed past
    the command at `offset`, when the command is what that state last applied.
    Committed past is not applied: a command the workers refused (dead-lettered: a
    portfolio not registered, under SIZER_REQUIRE_REGISTRATION, or any other
    admission rule) is committed past too. Raises CommandNotApplied naming it."""
    last = row.get("last_control_offset")
    if last is None or last < offset:
        raise CommandNotApplied(
            f"command {value['command_id']} ({value['type']} of {value['portfolio_id'][:80]!r}) at "
            f"controls[{partition}]@{offset} was not applied: the workers dead-lettered it (a portfolio that is not "
            f"registered, with SIZER_REQUIRE_REGISTRATION; `sizer tail dlq` names the reason)")
    return row


async def wait_applied(kafka: ConnectionSettings, sent: dict[TopicPartition, int], timeout_s: float, what: str) -> None:
    """Wait until the worker group has committed past the offset `sent` gives each
    partition (the last record sent there): under exactly-once, that commit is the
    transaction that applied them. Raises CommandNotApplied (exit 1) naming `what`
    and where it waits after `timeout_s`."""
    admin = AIOKafkaAdminClient(**kafka.client("control"))
    await start_or_close(admin)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            committed = await admin.list_consumer_group_offsets(kafka.app_id, partitions=list(sent))
            behind = [(tp, offset) for tp, offset in sent.items()
                      if (position := committed.get(tp)) is None or position.offset <= offset]
            if not behind:
                return
            if time.monotonic() > deadline:
                where = ", ".join(f"{tp.topic}[{tp.partition}]@{offset}" for tp, offset in behind)
                raise CommandNotApplied(
                    f"{what} is at {where}, but worker group {kafka.app_id} has not applied it within "
                    f"{timeout_s:.0f} s (is a worker running?)")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def status(kafka: ConnectionSettings, topics: TopicSet, portfolio_id: str | None = None) -> list[dict[str, Any]]:
    """Each portfolio's control state as the worker group's tables hold it: the two
    latches apart (`halted`/`halt`: the operator's, full or reduce-only, with who,
    why and when; `max_drawdown`: the kill switch's latch, with the drawdown that
    tripped it and when), the last command's offset, equity, its peak and the
    drawdown now (percent below the peak; None without a positive peak). Raises
    TopicMismatch or KafkaUnavailable as `changelogs.read_tables` says."""
    latest = await read_tables(kafka, topics, "control", ("controls", "streak"))
    rows = []
    for portfolio in sorted(latest):
        if portfolio_id is not None and portfolio != portfolio_id:
            continue
        state = controls_from_wire(latest[portfolio].get("controls"))
        stored = latest[portfolio].get("streak")
        halt, latch = state.halt, state.max_drawdown
        # the fill window is not read here (its chunks live in the `windows` table)
        streak = streak_from_wire({**stored, "seen_fills": []}, _NoConfig()) if stored else None
        rows.append({
            "portfolio_id": portfolio, "halted": halt is not None,
            "halt": None if halt is None else {"reason": halt.reason, "command_id": halt.command_id,
                                               "operator": halt.operator, "detail": halt.text,
                                               "since": format_event_time(halt.ts)},
            "max_drawdown": None if latch is None else {"detail": latch.text, "since": format_event_time(latch.ts)},
            "last_control_offset": state.last_control_offset,
            **_equity_row(streak),
        })
    if portfolio_id is not None and not rows:
        rows.append({"portfolio_id": portfolio_id, "halted": False, "halt": None, "max_drawdown": None,
                     "last_control_offset": None, **_equity_row(None)})
    return rows


def _equity_row(streak: Any) -> dict[str, Any]:
    """Equity, its peak and the drawdown (percent below the peak, to 4 places) of a
    stored streak; None for each without one (or, the drawdown, without a positive peak)."""
    if streak is None:
        return {"equity": None, "peak_equity": None, "drawdown_pct": None}
    drawdown = drawdown_shown(streak)
    return {"equity": decimals.canonical(streak.equity), "peak_equity": decimals.canonical(streak.peak),
            "drawdown_pct": None if drawdown is None else decimals.canonical(drawdown)}


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
