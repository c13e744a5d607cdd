"""The first hour with your own traffic: `sizer publish --journal FILE` puts a
journal's inputs onto their topics the way the worker needs them, and `sizer
tail decisions|orders|dlq` reads what it wrote.

What these commands take care of (docs: operating, "Running it yourself"): the topic
names carry `SIZER_TOPIC_PREFIX`; each input is keyed by its `portfolio_id`
(`symbol` for instruments), or the worker dead-letters it `KEY_MISMATCH`, and
written to its key's murmur2 partition, or the worker dead-letters it
`WRONG_PARTITION`;
instruments are published before everything else; decisions and orders are
written in transactions, so they are read `read_committed`. Both open their
Kafka clients from `ConnectionSettings.client(role)`, so they use the same security
as every other client.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import IO, Any, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import InvalidTimestampError

from streams.wire import decimals
from streams.wire.admission import PORTFOLIO_KEYED, home_partition
from streams.errors import RECORD_TIMESTAMP_RULE, ConfigError, KafkaUnavailable, TopicMismatch
from streams.wire import journal
from streams.kafka.io import start_or_close
from streams.kafka.settings import ConnectionSettings
from streams.kafka.topics import TopicSet
from streams.text import counted
from streams.wire.roles import KEY_FIELD


def journal_records(lines: Iterable[str | bytes], source: str = "journal",
                    numbers: list[int] | None = None) -> tuple[list[tuple[str, bytes | None, bytes, int | None]],
                                                               list[str]]:
    """(topic role, key, value, record timestamp) for every usable journal line,
    instruments first, the rest in file order; and the lines that cannot be
    published (`FILE:LINE: reason`). The values go out as written (the worker
    judges them, and dead-letters what it refuses); only the line's shape is
    checked here: JSON, a known topic, an object value with its key field.
    `numbers`, when given, receives each record's line number, in the same order."""
    instruments, others, problems = [], [], []
    instrument_lines, other_lines = [], []
    for parsed in journal.lines_of(lines):
        if parsed.error is not None:
            problems.append(f"{source}:{parsed.line}: {parsed.error}")
            continue
        topic, value = parsed.topic, parsed.value
        key = value.get(KEY_FIELD[topic]) if isinstance(value, dict) else None
        if not isinstance(key, str):
            problems.append(f"{source}:{parsed.line}: value must be an object with a {KEY_FIELD[topic]} string (its key)")
            continue
        record = (topic, key.encode(), decimals.dumps(value).encode(), parsed.timestamp)
        (instruments if topic == "instruments" else others).append(record)
        (instrument_lines if topic == "instruments" else other_lines).append(parsed.line)
    if numbers is not None:
        numbers[:] = instrument_lines + other_lines
    return instruments + others, problems


def input_partition(topics: TopicSet, role: str, key: bytes | None) -> int | None:
    """The partition a portfolio-keyed input must be written to (its key's, by Kafka's
    murmur2 partitioner: the one the worker admits it on); None, the producer's choice,
    for the others."""
    if role not in PORTFOLIO_KEYED or key is None:
        return None
    return home_partition(key, topics[role].partitions)


async def publish_records(kafka: ConnectionSettings, topics: TopicSet,
                          records: list[tuple[str, bytes | None, bytes, int | None]]) -> dict[str, int]:
    """Send in order, idempotently, waiting for every acknowledgement, each portfolio's
    inputs on their key's partition (`input_partition`); a count per topic role."""
    producer = AIOKafkaProducer(**kafka.client("publish"), acks="all", enable_idempotence=True, linger_ms=5)
    await start_or_close(producer)
    counts: dict[str, int] = {}
    try:
        pending = []
        for role, key, value, timestamp in records:
            pending.append(await producer.send(topics.name(role), value, key=key, timestamp_ms=timestamp,
                                               partition=input_partition(topics, role, key)))
            counts[role] = counts.get(role, 0) + 1
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return counts


def publish_journal(kafka: ConnectionSettings, topics: TopicSet, path: str, err: IO[str] = sys.stderr) -> int:
    """`sizer publish --journal FILE`: exit 0 when every line was published, 1 when
    some line could not be (each reported on stderr; the others are published)."""
    numbers: list[int] = []
    try:
        with open(path, "rb") as journal:
            records, problems = journal_records(journal, path, numbers)
    except OSError as exc:
        raise ConfigError(f"--journal: cannot read {path}: {exc.strerror}") from exc
    for problem in problems:
        print(problem, file=err)
    try:
        counts = asyncio.run(publish_records(kafka, topics, records))
    except InvalidTimestampError as exc:
        raise timestamp_refused(records, numbers, path) from exc
    shown = ", ".join(f"{counts[role]} to {topics.name(role)}" for role in counts)  # in the order sent
    print(f"published {counted(len(records), 'record')}{': ' + shown if shown else ''}")
    return 1 if problems else 0


def timestamp_refused(records: list[tuple[str, bytes | None, bytes, int | None]], numbers: list[int],
                      path: str) -> KafkaUnavailable:
    """One line for a journal the broker refused a record timestamp of: the line
    stamped furthest from this machine's clock, how far, and Kafka's rule
    (`errors.RECORD_TIMESTAMP_RULE`). The records of the refused batch are not
    stored; others may have been."""
    now = time.time() * 1000
    stamped = [(abs(timestamp - now), timestamp, number) for (_, _, _, timestamp), number in zip(records, numbers)
               if timestamp is not None]
    if not stamped:
        return KafkaUnavailable(f"{path}: the broker refused a record's timestamp: {RECORD_TIMESTAMP_RULE}")
    _, timestamp, number = max(stamped)
    offset_s = (timestamp - now) / 1000
    way = f"{abs(offset_s) / 3600:.1f} h {'ahead of' if offset_s > 0 else 'behind'}"
    return KafkaUnavailable(f"{path}:{number}: the broker refused its record timestamp, {timestamp} ({way} this "
                            f"machine's clock): {RECORD_TIMESTAMP_RULE}")


# -- tail ---------------------------------------------------------------------------

COLUMNS = {
    "decisions": (("partition@offset", 16), ("portfolio", 12), ("signal", 12), ("symbol", 14), ("outcome", 21),
                  ("qty", 10), ("notional", 10), ("event time", 24)),
    "orders": (("partition@offset", 16), ("portfolio", 12), ("order", 27), ("symbol", 14), ("side", 4),
               ("qty", 10), ("price", 10), ("notional", 10)),
    "dlq": (("source", 30), ("reason", 16), ("detail", 40), ("key", 12), ("value", 40)),
}


def _text(value: bytes | None, width: int = 200) -> str:
    if value is None:
        return "(null)"
    text = value.decode("utf-8", "replace")
    return text if len(text) <= width else text[:width] + "..."


def _headers(record: Any) -> dict[str, str]:
    return {name: (value.decode("utf-8", "replace") if value is not None else "") for name, value in
            (record.headers or ())}


def as_row(role: str, record: Any) -> tuple[str, ...]:
    """One record of `role` as the cells of its table row."""
    where = f"{record.partition}@{record.offset}"
    if role == "dlq":
        headers = _headers(record)
        source = (f"{headers.get('sizer.source.topic', '?')}[{headers.get('sizer.source.partition', '?')}]"
                  f"@{headers.get('sizer.source.offset', '?')}")
        return (source, headers.get("sizer.reason", ""), headers.get("sizer.detail", ""), _text(record.key, 40),
                _text(record.value).replace("\n", " "))
    value = decimals.loads_output(record.value)
    if role == "orders":
        return (where, value["portfolio_id"], value["order_id"], value["symbol"], value["side"], value["qty"],
                value["price"], value["notional"])
    trace = value.get("trace", {})
    outcome = "accepted" if value["outcome"] == "accepted" else value["reason"]
    return (where, value["portfolio_id"], value["signal_id"], trace.get("signal", {}).get("symbol", ""), outcome,
            value.get("qty") or "", value.get("notional") or "", str(trace.get("signal", {}).get("ts", "")))


def as_json(role: str, record: Any) -> str:
    """One record as one JSON line: decisions and orders as written, with their
    position; a dead letter as its headers, key and value (UTF-8, replaced)."""
    where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
    if role == "dlq":
        return json.dumps({**where, "headers": _headers(record), "key": None if record.key is None else
                           _text(record.key, 1 << 20), "value": None if record.value is None else
                           _text(record.value, 1 << 20)}, ensure_ascii=False)
    return json.dumps({**where, "value": decimals.loads_output(record.value)}, ensure_ascii=False)


def _line(cells: Iterable[str], columns: tuple[tuple[str, int], ...]) -> str:
    return " ".join(f"{str(cell):<{width}.{width}}" for cell, (_, width) in zip(cells, columns)).rstrip()


async def tail(kafka: ConnectionSettings, topics: TopicSet, role: str, follow: bool, json_lines: bool,
               out: IO[str] = sys.stdout, idle_stop: asyncio.Event | None = None) -> int:
    """Print every committed record of `role` from the beginning, in partition then
    offset order up to the current ends; with `follow`, then every new one as it
    commits, until interrupted. Returns the count printed."""
    spec = topics[role]
    tps = [TopicPartition(spec.name, p) for p in range(spec.partitions)]
    consumer = AIOKafkaConsumer(**kafka.client("tail"), group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest")
    await start_or_close(consumer)
    printed = 0
    columns = COLUMNS[role]
    try:
        if spec.name not in await consumer.topics():  # else it would wait for the topic forever
            raise TopicMismatch(f"missing topics: {spec.name} (run `sizer topics apply`)")
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        if not json_lines:
            print(_line((name for name, _ in columns), columns), file=out)
            print("-" * sum(width + 1 for _, width in columns), file=out)
        backlog: list[Any] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                backlog += batch
        backlog.sort(key=lambda r: (r.partition, r.offset))

        def show(records: list[Any]) -> None:
            nonlocal printed
            for record in records:
                print(as_json(role, record) if json_lines else _line(as_row(role, record), columns), file=out)
                printed += 1
            out.flush()

        show(backlog)
        while follow and not (idle_stop is not None and idle_stop.is_set()):
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                show(batch)
    finally:
        await consumer.stop()
    return printed
