"""Records as a producer sends them (key, value, headers, timestamp, any bytes and
any size), and the check every record test ends on: each input offset has exactly
one outcome."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from streams.wire.admission import admit_record
from streams.errors import InvalidMessage
from streams.kafka.io import Record
from streams.worker.dead_letters import PREVIEW_BYTES
from streams.wire.instruments import admit_instrument
from tests.integration.harness import Deployment

# The broker's default message.max.bytes: a larger record is refused at the broker.
BROKER_MAX_BYTES = 1_048_588


@dataclass(frozen=True)
class Raw:
    role: str  # signals | fills | instruments
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None  # None: the producer's clock


def send_raw(deployment: Deployment, records: list[Raw]) -> list[tuple[Raw, Any]]:
    """Send each record as is, in order, each to the partition of its key (any
    partition for a null key); (record, RecordMetadata or the exception that
    refused it). The producer's own limit is raised well past the broker's, so
    that the broker's limit is the one met."""
    async def run() -> list[tuple[Raw, Any]]:
        # not idempotent: after a record the broker refuses, an idempotent producer fails
        # the partition's next records too (OutOfOrderSequenceNumber)
        producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap, acks="all", enable_idempotence=False,
                                    max_request_size=4 * 1024 * 1024, linger_ms=5)
        await producer.start()
        results: list[tuple[Raw, Any]] = []
        pending: list[tuple[Raw, Any]] = []

        async def settle() -> None:
            for raw, future in pending:
                try:
                    results.append((raw, await future))
                except Exception as exc:  # noqa: BLE001 - refused by the broker: part of the result
                    results.append((raw, exc))
            pending.clear()

        try:
            for raw in records:
                # a large record goes alone: the broker refuses a whole batch over its limit
                alone = len(raw.value or b"") + len(raw.key or b"") > 64 * 1024
                if alone:
                    await settle()
                try:
                    pending.append((raw, await producer.send(
                        deployment.topics.name(raw.role), raw.value, key=raw.key, headers=list(raw.headers),
                        timestamp_ms=raw.timestamp_ms)))
                except Exception as exc:  # noqa: BLE001 - refused before sending: part of the result
                    results.append((raw, exc))
                if alone:
                    await settle()
            await settle()
            return results
        finally:
            await producer.stop()

    return asyncio.run(run())


def digest(data: bytes) -> str:
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}"


def kept(letter: Record, original: bytes | None, field: str) -> bool:
    """Whether the dead letter keeps the original key or value: whole, or its first
    bytes with its size and digest in a header."""
    got = letter.key if field == "key" else letter.value
    if got == original:
        return True
    summary = letter.header(f"sizer.{field}.original")
    return original is not None and summary == digest(original) and (
        got is None or got == original[:PREVIEW_BYTES])


def assert_every_offset_has_one_outcome(deployment: Deployment, skew_ms: int) -> dict[str, int]:
    """Every record on signals, fills and instruments has exactly one outcome: a
    decision (signals), a dead letter with its original bytes (or their summary),
    its Kafka timestamp and the reason, or else is admitted (fills: a state change;
    instruments: set or deleted). Returns counts per outcome."""
    dead: dict[tuple[str, int, int], list[Record]] = {}
    for letter in deployment.read("dlq"):
        source = (letter.header("sizer.source.topic"), int(letter.header("sizer.source.partition")),
                  int(letter.header("sizer.source.offset")))
        dead.setdefault(source, []).append(letter)
    decided: dict[tuple[int, int], int] = {}
    for record in deployment.read("decisions"):
        position = record.json()["trace"]["input"]
        decided[(position["partition"], position["offset"])] = decided.get(
            (position["partition"], position["offset"]), 0) + 1
    counts = {"decided": 0, "dead_lettered": 0, "applied": 0}
    for role in ("signals", "fills", "instruments"):
        for record in deployment.read(role):
            where = f"{role}[{record.partition}]@{record.offset}"
            letters = dead.get((record.topic, record.partition, record.offset), [])
            decisions = decided.get((record.partition, record.offset), 0) if role == "signals" else 0
            assert len(letters) + decisions <= 1, f"{where}: {decisions} decisions and {len(letters)} dead letters"
            if letters:
                letter = letters[0]
                assert kept(letter, record.key, "key") and kept(letter, record.value, "value"), where
                assert letter.header("sizer.source.timestamp") == str(record.timestamp), where
                assert letter.header("sizer.reason"), where
                counts["dead_lettered"] += 1
                continue
            if decisions:
                counts["decided"] += 1
                continue
            # no outcome recorded: it must be one the worker admits (a state change)
            try:
                if role == "instruments":
                    admit_instrument(record.key, record.value, record.timestamp)
                else:
                    admit_record(role, record.key, record.value, record.timestamp, skew_ms)
            except InvalidMessage as exc:
                raise AssertionError(f"{where}: neither decided nor dead-lettered, and not admitted: {exc}")
            assert role != "signals", f"{where}: an admitted signal without a decision"
            counts["applied"] += 1
    return counts
