"""The first hour with your own traffic: `sizer publish --journal FILE` puts a
journal's inputs onto their topics the way the worker needs them, and `sizer
tail` reads what happened, inputs and outputs merged in time.

What these commands take care of (docs: operating, "Running it yourself"): the topic
names carry `SIZER_TOPIC_PREFIX`; each input is keyed by its `portfolio_id`
(`symbol` for instruments), or the worker dead-letters it `KEY_MISMATCH`, and
written to its key's murmur2 partition, or the worker dead-letters it
`WRONG_PARTITION`; instruments are published before everything else; every record is checked by
the worker's own admission rules before anything is sent, and a journal with a
bad line is not published at all (unless `--force`); with `--in-order`, each
run of one topic is applied by the worker group before the next is sent.
Decisions and orders are written in transactions, so everything is read
`read_committed`. Both open their Kafka clients from `ConnectionSettings.client(role)`,
so they use the same security as every other client.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import IO, Any, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import InvalidTimestampError, TopicAuthorizationFailedError

from streams.wire import decimals
from streams.wire.admission import PORTFOLIO_KEYED, admit_record, home_partition
from streams.wire.framing import payload
from streams.wire.instruments import admit_instrument
from streams.errors import RECORD_TIMESTAMP_RULE, ConfigError, InvalidMessage, KafkaUnavailable, own_clock
from streams.wire import journal
from streams.kafka.io import start_or_close
from streams.kafka.settings import ConnectionSettings
from streams.kafka.topics import (TIMESTAMP_BOUND, TimestampBounds, TopicSet, not_authorized, require_topics,
                                  timestamp_bounds)
from streams.text import counted
from streams.wire.models import format_event_time, parse_time
from streams.wire.roles import KEY_FIELD, ROLES, TABLE


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One journal line as the record `sizer publish` would send, and what the worker
    would do with it: `refused` is the InvalidMessage it would dead-letter it for
    (None: admitted)."""

    line: int
    role: str
    key: bytes | None
    value: bytes
    timestamp: int | None
    refused: InvalidMessage | None = None


def check_record(role: str, key: bytes | None, value: bytes, timestamp_ms: int, max_future_skew_ms: int
                 ) -> InvalidMessage | None:
    """What the worker would dead-letter this record for, by the worker's own
    admission functions (`admit_instrument` for instruments, `admit_record` for the
    rest), or None when it would admit it. `timestamp_ms`: the record timestamp
    it will carry."""
    try:
        if role == "instruments":
            admit_instrument(key, value, timestamp_ms)
        else:
            admit_record(role, key, value, timestamp_ms, max_future_skew_ms)
    except InvalidMessage as exc:
        return exc
    return None


def journal_records(lines: Iterable[str | bytes], max_future_skew_ms: int, now_ms: int,
                    source: str = "journal") -> tuple[list[Outgoing], list[str]]:
    """Every journal line with a topic as the record to send (keyed by its key field,
    instruments first, the rest in file order), each judged by `check_record` (a line
    without a `"timestamp"` is judged at `now_ms`, when the producer stamps it); and
    the lines that cannot be sent at all (`FILE:LINE: reason`: not JSON, no known
    topic)."""
    instruments: list[Outgoing] = []
    others: list[Outgoing] = []
    unsendable: list[str] = []
    for parsed in journal.lines_of(lines):
        if parsed.error is not None:  # not JSON, no known topic, an unusable "timestamp"
            unsendable.append(f"{source}:{parsed.line}: {parsed.error}")
            continue
        topic, value = parsed.topic, parsed.value
        key = value.get(KEY_FIELD[topic]) if isinstance(value, dict) else None
        key_bytes = key.encode() if isinstance(key, str) else None
        payload = decimals.dumps(value).encode()
        refused = check_record(topic, key_bytes, payload,
                               parsed.timestamp if parsed.timestamp is not None else now_ms, max_future_skew_ms)
        record = Outgoing(parsed.line, topic, key_bytes, payload, parsed.timestamp, refused)
        (instruments if topic == "instruments" else others).append(record)
    return instruments + others, unsendable


def input_partition(topics: TopicSet, role: str, key: bytes | None) -> int | None:
    """The partition a portfolio-keyed input must be written to (its key's, by Kafka's
    murmur2 partitioner: the one the worker admits it on); None, the producer's choice,
    for the others."""
    if role not in PORTFOLIO_KEYED or key is None:
        return None
    return home_partition(key, topics[role].partitions)


def span(ms: float) -> str:
    """A duration for a person: `45 s`, `10 min`, `2.0 h`, `120 days`."""
    seconds = abs(ms) / 1000
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def out_of_bounds(records: list[Outgoing], topics: TopicSet, bounds: dict[str, TimestampBounds], path: str,
                  now_ms: int) -> list[str]:
    """`FILE:LINE: ...` for each record whose journal `"timestamp"` its topic's broker
    would refuse, or would delete by retention within minutes (`bounds`, judged by
    this machine's clock `now_ms`): said before anything is sent, so that a journal
    is published whole or not at all, and nothing published is lost. A record
    without a `"timestamp"` is stamped as it is sent, within every bound."""
    problems = []
    for record in records:
        name = topics.name(record.role)
        bound = bounds.get(name)
        if record.timestamp is None or bound is None or bound.log_append:
            continue
        ahead = record.timestamp - now_ms
        if bound.after_ms is not None and ahead > bound.after_ms:
            problems.append(f"{path}:{record.line}: its record timestamp {record.timestamp} is {span(ahead)} ahead of "
                            f"this machine's clock; {name} refuses a record stamped more than {bound.after_ms} ms "
                            f"ahead of the broker's clock ({TIMESTAMP_BOUND})")
        elif bound.before_ms is not None and -ahead > bound.before_ms:
            problems.append(f"{path}:{record.line}: its record timestamp {record.timestamp} is {span(ahead)} behind "
                            f"this machine's clock; {name} refuses a record stamped more than {bound.before_ms} ms "
                            f"behind the broker's clock (message.timestamp.before.max.ms)")
        elif bound.retention_ms is not None and -ahead > bound.retention_ms:
            problems.append(f"{path}:{record.line}: its record timestamp {record.timestamp} is {span(ahead)} behind "
                            f"this machine's clock; {name} deletes a record stamped more than {bound.retention_ms} "
                            f"ms ago (retention.ms) at its next retention check, before an audit could read it")
    return problems


def timestamp_refused(records: list[Outgoing], path: str) -> KafkaUnavailable:
    """One line for a journal the broker refused a record timestamp of: the line
    stamped furthest from this machine's clock, how far, and Kafka's rule
    (`errors.RECORD_TIMESTAMP_RULE`). The records of the refused batch are not
    stored; others may have been."""
    now = time.time() * 1000
    stamped = [(abs(r.timestamp - now), r.timestamp, r.line) for r in records if r.timestamp is not None]
    if not stamped:
        return KafkaUnavailable(f"{path}: the broker refused a record's timestamp{own_clock()}: "
                                f"{RECORD_TIMESTAMP_RULE}")
    _, timestamp, number = max(stamped)
    offset_s = (timestamp - now) / 1000
    way = f"{abs(offset_s) / 3600:.1f} h {'ahead of' if offset_s > 0 else 'behind'}"
    return KafkaUnavailable(f"{path}:{number}: the broker refused its record timestamp, {timestamp} ({way} this "
                            f"machine's clock): {RECORD_TIMESTAMP_RULE}")


def in_file_order(records: list[Outgoing]) -> list[list[Outgoing]]:
    """The records (instruments first) in runs of one topic each: a run is sent
    whole, and the worker group must have applied it before the next is sent."""
    runs: list[list[Outgoing]] = []
    for record in records:
        if runs and runs[-1][0].role == record.role:
            runs[-1].append(record)
        else:
            runs.append([record])
    return runs


async def publish_records(kafka: ConnectionSettings, topics: TopicSet, records: list[Outgoing], in_order: bool = False,
                          timeout_s: float = 60.0) -> dict[str, int]:
    """Send in order, idempotently, waiting for every acknowledgement; a count per
    topic role. `in_order`: one run of a topic at a time (`in_file_order`), each
    applied by the worker group before the next is sent (instruments are read by
    every worker's own view, not by the group: they are only acknowledged).
    Raises TopicMismatch naming a missing topic before anything is sent,
    KafkaUnavailable naming one this principal may not write, CommandNotApplied."""
    from streams.kafka.schema_registry import product_framing
    from streams.ops.control import wait_applied

    client = kafka.for_role("publish")
    await require_topics(client, sorted({topics.name(record.role) for record in records}), "Write")
    framing = await product_framing(kafka, topics)  # the Confluent wire format with a Schema Registry
    producer = AIOKafkaProducer(**client.options(acks="all", enable_idempotence=True, linger_ms=5))
    await start_or_close(producer)
    counts: dict[str, int] = {}
    try:
        for run in (in_file_order(records) if in_order else [records]):
            pending = []
            for record in run:
                value = framing.written(record.role, record.value)
                pending.append(await producer.send(topics.name(record.role), value, key=record.key,
                                                   timestamp_ms=record.timestamp,
                                                   partition=input_partition(topics, record.role, record.key)))
                counts[record.role] = counts.get(record.role, 0) + 1
            sent = await asyncio.gather(*pending)
            if in_order and run[0].role != "instruments":
                last: dict[TopicPartition, int] = {}
                for metadata in sent:
                    tp = TopicPartition(metadata.topic, metadata.partition)
                    last[tp] = max(last.get(tp, -1), metadata.offset)
                await wait_applied(kafka, last, timeout_s,
                                   f"{source_lines(run)} ({counted(len(run), 'record')} on {topics.name(run[0].role)})")
    except TopicAuthorizationFailedError:
        raise not_authorized(sorted({topics.name(record.role) for record in records}), "Write",
                             kafka.principal) from None
    finally:
        await producer.stop()
    return counts


def source_lines(run: list[Outgoing]) -> str:
    """`line 3` or `lines 3-7` (journal lines of a run)."""
    first, last = run[0].line, run[-1].line
    return f"line {first}" if first == last else f"lines {first}-{last}"


def publish_journal(kafka: ConnectionSettings, topics: TopicSet, path: str, max_future_skew_ms: int,
                    dry_run: bool = False, force: bool = False, in_order: bool = False, timeout_s: float = 60.0,
                    out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    """`sizer publish --journal FILE`: every line is checked first, by the rules the
    worker applies and by its topic's bound on record timestamps (the broker's, read
    first; by this machine's clock), and the journal is published all or nothing.
    Exit 0 when every record was sent (or, `dry_run`, would be); 1 when a line
    cannot be sent, its `"timestamp"` is out of its topic's bound, or a record would
    be dead-lettered (each reported on stderr as `FILE:LINE: ...`; nothing is
    sent); 4 (KafkaUnavailable) when the broker refuses a record timestamp all the
    same (its clock differs from this machine's). `force` sends the records the worker will
    dead-letter too (lines that name no topic still cannot be sent)."""
    try:
        with open(path, "rb") as handle:
            records, unsendable = journal_records(handle, max_future_skew_ms, int(time.time() * 1000), path)
    except OSError as exc:
        raise ConfigError(f"--journal: cannot read {path}: {exc.strerror}") from exc
    refused = [record for record in records if record.refused is not None]
    if not dry_run and not unsendable:
        # a line the broker would refuse: said now, or the journal would be published in part
        names = sorted({topics.name(record.role) for record in records if record.timestamp is not None})
        bounds = asyncio.run(timestamp_bounds(kafka.for_role("publish"), names)) if names else {}
        unsendable = out_of_bounds(records, topics, bounds, path, int(time.time() * 1000))
    for problem in unsendable:
        print(problem, file=err)
    for record in sorted(refused, key=lambda r: r.line):
        print(f"{path}:{record.line}: {record.refused} (the worker would dead-letter it)", file=err)
    if unsendable or (refused and not force):
        problems = len(unsendable) + (0 if force else len(refused))
        hint = " (--force sends what the worker would dead-letter)" if refused and not force else ""
        print(f"nothing published: {counted(problems, 'bad line')} in {path}{hint}", file=err)
        return 1
    if dry_run:
        counts: dict[str, int] = {}
        for record in records:
            counts[record.role] = counts.get(record.role, 0) + 1
        verb = "would publish"
    else:
        try:
            counts = asyncio.run(publish_records(kafka, topics, records, in_order, timeout_s))
        except InvalidTimestampError as exc:
            raise timestamp_refused(records, path) from exc
        verb = "published"
    shown = ", ".join(f"{counts[role]} to {topics.name(role)}" for role in counts)  # in the order sent
    forced = f" ({counted(len(refused), 'record')} the worker will dead-letter, --force)" if refused else ""
    print(f"{verb} {counted(len(records), 'record')}{': ' + shown if shown else ''}{forced}", file=out)
    return 0


# -- tail ---------------------------------------------------------------------------

# what `sizer tail` can show: a portfolio's inputs (not the instruments: reference
# data) and everything the worker writes; without a topic named, all but the
# signals (each decision names its signal)
TAILED = tuple(role for role in ROLES if TABLE[role].timed or TABLE[role].output)
TAILED_BY_DEFAULT = tuple(role for role in TAILED if role != "signals")
COLUMNS = (("time", 24), ("topic", 9), ("where", 9), ("portfolio", 12), ("what", 0))


def _text(value: bytes | None, width: int = 200) -> str:
    if value is None:
        return "(null)"
    text = value.decode("utf-8", "replace")
    return text if len(text) <= width else text[:width] + "..."


def _headers(record: Any) -> dict[str, str]:
    return {name: (value.decode("utf-8", "replace") if value is not None else "") for name, value in
            (record.headers or ())}


def _value(role: str, record: Any) -> Any:
    """The record's value as JSON data, or None when it is not JSON (an input a
    producer got wrong: the dead-letter topic says why)."""
    if record.value is None or role == "dlq":
        return None
    try:
        # what the worker wrote has every decimal as a string; inputs may have numbers
        written = TABLE[role].output
        value = payload(record.value)  # framed or not
        return decimals.loads_output(value) if written else decimals.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None


def portfolio_of(role: str, record: Any, value: Any) -> str:
    """The portfolio a record belongs to: the value's `portfolio_id`, else its key
    (dead letters keep the original record's key)."""
    if isinstance(value, dict) and isinstance(value.get("portfolio_id"), str):
        return value["portfolio_id"]
    return "" if record.key is None else record.key.decode("utf-8", "replace")


def _fields(value: dict[str, Any], *names: str) -> str:
    return " ".join(f"{name}={value[name]}" for name in names if value.get(name) is not None)


def summary(role: str, record: Any, value: Any) -> str:
    """What a record says, in one line."""
    if role == "dlq":
        headers = _headers(record)
        return (f"{headers.get('sizer.reason', '?')} from {headers.get('sizer.source.topic', '?')}"
                f"[{headers.get('sizer.source.partition', '?')}]@{headers.get('sizer.source.offset', '?')}: "
                f"{headers.get('sizer.detail', '')} value={_text(record.value, 80)}")
    if not isinstance(value, dict):
        return f"(not a JSON object) {_text(record.value, 80)}"
    if role == "decisions":
        signal = value.get("trace", {}).get("signal", {})
        head = f"{value.get('signal_id')} {signal.get('symbol', '')} {signal.get('side', '')}"
        if value.get("outcome") == "accepted":
            return f"{head} accepted {_fields(value, 'qty', 'notional', 'order_id')}"
        return f"{head} {value.get('reason')} {value.get('trace', {}).get('detail', '')}".rstrip()
    if role == "orders":
        return (f"{value.get('order_id')} {value.get('side')} {value.get('qty')} {value.get('symbol')} "
                f"@ {value.get('price')} notional={value.get('notional')}")
    if role == "fills":
        return f"{value.get('type')} {_fields(value, 'event_id', 'order_id', 'symbol', 'qty', 'price', 'final', 'realized_pnl', 'ts')}"
    if role == "controls":
        return (f"{value.get('type')} by {value.get('operator')}: {value.get('reason')} "
                f"{_fields(value, 'order_id', 'amount', 'command_id')}").rstrip()
    return f"{_fields(value, 'signal_id', 'symbol', 'side', 'score', 'price', 'ts')}"  # signals


def as_row(role: str, record: Any) -> tuple[str, ...]:
    """One record of `role` as the cells of its table row."""
    value = _value(role, record)
    return (format_event_time(record.timestamp), role, f"{record.partition}@{record.offset}",
            portfolio_of(role, record, value), summary(role, record, value))


def as_json(role: str, record: Any) -> str:
    """One record as one JSON line: its role, position and record time, and its value
    (decisions and orders as written, inputs as parsed, or as text when they are not
    JSON); a dead letter as its headers, key and value (UTF-8, replaced)."""
    where = {"role": role, "topic": record.topic, "partition": record.partition, "offset": record.offset,
             "time": format_event_time(record.timestamp)}
    if role == "dlq":
        return json.dumps({**where, "headers": _headers(record), "key": None if record.key is None else
                           _text(record.key, 1 << 20), "value": None if record.value is None else
                           _text(record.value, 1 << 20)}, ensure_ascii=False)
    value = _value(role, record)
    if value is None and record.value is not None:
        value = _text(record.value, 1 << 20)
    return decimals.dumps({**where, "key": None if record.key is None else _text(record.key, 1 << 20),
                           "value": value})


def _line(cells: Iterable[str]) -> str:
    # never cut: a long portfolio id pushes its row's later cells right
    return " ".join(f"{str(cell):<{width}}" for cell, (_, width) in zip(cells, COLUMNS)).rstrip()


def parse_from(text: str) -> int | str:
    """--from: `beginning`, `now`, or a time (RFC 3339 or epoch ms) as epoch ms.
    Raises ConfigError."""
    if text in ("beginning", "now"):
        return text
    try:
        return parse_time(text)  # type: ignore[return-value]
    except (ValueError, InvalidMessage) as exc:
        raise ConfigError(f"--from: give beginning, now, or a time (RFC 3339 or epoch ms), got {text!r}") from exc


async def tail(kafka: ConnectionSettings, topics: TopicSet, roles: Iterable[str], follow: bool, json_lines: bool,
               portfolio: str | None = None, start: int | str = "beginning", out: IO[str] = sys.stdout) -> None:
    """Print the committed records of `roles` (read_committed), merged in record-time
    order, from `start` (`beginning`, `now`, or epoch ms: the first record at or
    after it) up to the current ends; with `follow` (implied by `now`), then every
    new one as it commits, each fetch in time order, until interrupted. Only
    `portfolio`'s records when given. Raises TopicMismatch naming a missing topic,
    KafkaUnavailable naming one this principal may not read."""
    roles = tuple(roles)
    names = {topics.name(role): role for role in roles}
    client = kafka.for_role("tail")
    await require_topics(client, list(names), "Read")
    tps = [TopicPartition(topics.name(role), p) for role in roles for p in range(topics[role].partitions)]
    consumer = AIOKafkaConsumer(**client.options(group_id=None, enable_auto_commit=False,
                                                isolation_level="read_committed", auto_offset_reset="earliest"))
    await start_or_close(consumer)
    order = {role: index for index, role in enumerate(TAILED)}

    def show(records: list[Any]) -> None:
        records.sort(key=lambda r: (r.timestamp, order[names[r.topic]], r.partition, r.offset))
        for record in records:
            role = names[record.topic]
            if portfolio is not None and portfolio_of(role, record, _value(role, record)) != portfolio:
                continue
            print(as_json(role, record) if json_lines else _line(as_row(role, record)), file=out)
        out.flush()

    try:
        if not json_lines:
            print(_line(name for name, _ in COLUMNS), file=out)
            print("-" * 100, file=out)
        await _follow(consumer, tps, start, follow or start == "now", show)
    except TopicAuthorizationFailedError:
        # visible (Describe) but not readable: refused at the first offset or fetch request
        raise not_authorized(sorted(names), "Read", kafka.principal) from None
    finally:
        await consumer.stop()


async def _follow(consumer: AIOKafkaConsumer, tps: list[TopicPartition], start: int | str, follow: bool,
                  show: Any) -> None:
    """Position every partition at `start`, `show` everything up to the ends as of
    now in one call, then (`follow`) each fetch as it comes."""
    consumer.assign(tps)
    ends = await consumer.end_offsets(tps)
    if start == "beginning":
        await consumer.seek_to_beginning(*tps)
    elif start == "now":
        for tp in tps:
            consumer.seek(tp, ends[tp])
    else:
        found = await consumer.offsets_for_times({tp: start for tp in tps})
        for tp in tps:
            consumer.seek(tp, found[tp].offset if found.get(tp) is not None else ends[tp])
    backlog: list[Any] = []
    while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
        for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
            backlog += batch if follow else [r for r in batch if r.offset < ends[tp]]
    show(backlog)
    while follow:
        show([r for batch in (await consumer.getmany(timeout_ms=500)).values() for r in batch])
