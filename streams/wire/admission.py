"""Which input records are admitted, and why the others are not: one rule for
the worker, the instrument view, the audit and replay from Kafka, and the
offline journal.

A record on an input topic is admitted when its value decodes as the topic's
message, its key is the message's key field (DESIGN.md, "Topics"), it sits on
the partition Kafka's default partitioner gives that key (murmur2: DESIGN.md,
"Production Kafka", partition integrity), and its event time is not more than
`max_future_skew_s` ahead of its Kafka record timestamp (DESIGN.md, "Event
time"). Everything else is an `InvalidMessage` whose code
says which rule failed; the worker dead-letters it, the audit knows the worker
did, and replay reports it as a bad line.
"""

from __future__ import annotations

from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from streams.errors import InvalidMessage
from streams.wire.models import decode, validate
from streams.wire.roles import INPUTS, TIMED
# the inputs keyed by portfolio, whose records must sit on their key's partition
PORTFOLIO_KEYED = frozenset(role for role, (_, key_field) in INPUTS.items() if key_field == "portfolio_id")


def check_key(role: str, message: Any, key: bytes | None) -> None:
    """The record's key must be the UTF-8 bytes of the message's key field; a null
    key is a mismatch too (the producer's partitioner would have put the record on
    any partition). Raises InvalidMessage KEY_MISMATCH."""
    key_field = INPUTS[role][1]
    expected: str = getattr(message, key_field)
    if key != expected.encode():
        shown = "null" if key is None else repr(key[:80].decode("utf-8", "replace"))
        raise InvalidMessage("KEY_MISMATCH", f"key: must equal {key_field} {expected[:80]!r}, got {shown}")


def home_partition(key: bytes, partitions: int) -> int:
    """The partition (0 <= p < `partitions`) that Kafka's default partitioner gives a
    keyed record: murmur2 of the key bytes, sign bit cleared, modulo the partition
    count. This is the Java client's `Utils.toPositive(Utils.murmur2(key)) %
    numPartitions`, aiokafka's and kafka-python's default, and librdkafka's
    `murmur2_random` for a non-null key. Computed by aiokafka's own partitioner."""
    return DefaultPartitioner()(key, range(partitions), None)


def check_partition(key: bytes, partition: int, partitions: int) -> None:
    """A portfolio's state lives on its key's home partition (`home_partition`): a record
    anywhere else would be sized by another worker against another, empty copy of the
    portfolio, past its halts and caps. Raises InvalidMessage WRONG_PARTITION naming
    both partitions."""
    home = home_partition(key, partitions)
    if partition != home:
        raise InvalidMessage(
            "WRONG_PARTITION",
            f"partition: the record is on partition {partition}, its key's partition is {home} of {partitions} "
            f"(Kafka's default murmur2 partitioner; librdkafka clients need partitioner=murmur2_random)",
        )


def check_event_time(message: Any, record_timestamp_ms: int | None, max_future_skew_ms: int) -> None:
    """An event time more than `max_future_skew_ms` ahead of the record's timestamp
    (the producer's or the broker's clock when it was written) is a mistyped clock:
    admitting it would move the portfolio's clock ahead of every real input.
    Nothing to check when the caller knows no record timestamp (None: a journal line
    without one). A record that has none (-1, Kafka's "no timestamp", which any
    client but Java's can send) has an event time nothing bounds: the broker's
    `message.timestamp.after.max.ms` does not apply to it, so it is refused too.
    Raises InvalidMessage FUTURE_TIMESTAMP."""
    if record_timestamp_ms is None:
        return
    if record_timestamp_ms < 0:
        raise InvalidMessage(
            "FUTURE_TIMESTAMP",
            f"timestamp: the record has no timestamp ({record_timestamp_ms}), so its ts cannot be bounded by the "
            f"broker's clock (message.timestamp.after.max.ms does not apply to it): send it with a record timestamp")
    ahead = message.ts - record_timestamp_ms
    if ahead > max_future_skew_ms:
        raise InvalidMessage(
            "FUTURE_TIMESTAMP",
            f"ts: {ahead} ms ahead of the record timestamp {record_timestamp_ms} "
            f"(max_future_skew_ms={max_future_skew_ms})",
        )


def admit_message(role: str, data: Any, max_future_skew_ms: int, record_timestamp_ms: int | None = None) -> Any:
    """An already-parsed JSON value (a journal line's `value`) as the role's message.
    Raises InvalidMessage."""
    message = validate(INPUTS[role][0], data)
    if role in TIMED:
        check_event_time(message, record_timestamp_ms, max_future_skew_ms)
    return message


def admit_record(role: str, key: bytes | None, value: bytes | None, record_timestamp_ms: int | None,
                 max_future_skew_ms: int, partition: int | None = None, partitions: int | None = None) -> Any:
    """A Kafka record of an input topic as the role's message, or InvalidMessage
    saying why not: NULL_VALUE (a tombstone), INVALID_JSON, NOT_AN_OBJECT,
    MISSING_FIELD, INVALID_FIELD, KEY_MISMATCH, WRONG_PARTITION (only when the
    record's `partition` and its topic's partition count `partitions` are given,
    and only for the portfolio-keyed roles) or FUTURE_TIMESTAMP."""
    if value is None:
        raise InvalidMessage("NULL_VALUE", f"value: a record with a null value (tombstone) is not a {role} message")
    message = decode(INPUTS[role][0], value)
    check_key(role, message, key)
    if role in PORTFOLIO_KEYED and partition is not None and partitions is not None:
        check_partition(key, partition, partitions)
    if role in TIMED:
        check_event_time(message, record_timestamp_ms, max_future_skew_ms)
    return message
