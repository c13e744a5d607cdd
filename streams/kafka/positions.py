"""Stored input positions: how the worker records, per input partition, the next
offset to process (`worker.positions.InputPositions` keeps them in a
changelog-backed table), and how they are read back from Kafka by the topic
check (`kafka.topics.apply`) to recognise an input topic recreated under the group.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition

from streams.kafka.io import partition_ends, read_spans, read_topic
from streams.wire.roles import POSITIONED

if TYPE_CHECKING:
    from streams.kafka.settings import ClientConfig
    from streams.kafka.topics import TopicSet


def position_key(topic: str, partition: int) -> bytes:
    return f"{topic}:{partition}".encode()


def record_fingerprint(key: bytes | None, value: bytes | None, timestamp_ms: int | None) -> str:
    """A short digest of a record (key, value, timestamp): stored with a position, it
    says which record was processed last, so a topic deleted and recreated under the
    group is recognised even once it has grown past the old position (aiokafka sees
    no topic ids)."""
    digest = hashlib.blake2b(digest_size=8)
    for part in (key, value, None if timestamp_ms is None else str(timestamp_ms).encode()):
        digest.update(b"-" if part is None else len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def position_value(next_offset: int, fingerprint: str | None) -> bytes:
    """A stored position: the next offset, and the fingerprint of the record before it."""
    return f"{next_offset}:{fingerprint}".encode() if fingerprint else str(next_offset).encode()


def parse_position(raw: bytes) -> tuple[int, str | None]:
    """(next offset, fingerprint of the record before it or None) of a stored position,
    as written by `position_value` (or, before fingerprints, the bare offset)."""
    offset, _, fingerprint = raw.partition(b":")
    return int(offset), fingerprint.decode() or None



async def _partition_counts(admin: Any, names: list[str]) -> dict[str, int]:
    return {entry["topic"]: len(entry.get("partitions") or ()) for entry in await admin.describe_topics(names)}


def positions_changelog(app_id: str) -> str:
    """The changelog of the worker's `input-positions` table (faust's naming)."""
    return f"{app_id}-input-positions-changelog"


async def stored_positions(admin: Any, client: ClientConfig, topics: TopicSet, app_id: str,
                           fingerprints: dict[tuple[str, int], str] | None = None) -> dict[tuple[str, int], int]:
    """(input topic, partition) -> the next offset the worker group `app_id` would
    process: its input positions (`worker.positions.InputPositions`, read from their
    changelog) and, where higher, the group's committed offsets. Kafka drops a
    group's committed offsets when their topic is deleted; the positions changelog
    keeps them, and it is what the worker skips by. `fingerprints`, when given, is
    filled with the fingerprint of the last record processed before each stored
    position (`record_fingerprint`), where one was stored."""
    names = {topics.name(role) for role in POSITIONED}
    stored: dict[tuple[str, int], int] = {}
    try:
        committed = await admin.list_consumer_group_offsets(app_id)
    except Exception:  # noqa: BLE001 - no such group: nothing committed
        committed = {}
    for tp, meta in committed.items():
        if tp.topic in names and meta.offset >= 0:
            stored[(tp.topic, tp.partition)] = meta.offset
    changelog = positions_changelog(app_id)
    if changelog in set(await admin.list_topics()):
        partitions = (await _partition_counts(admin, [changelog])).get(changelog, 0)
        # read whole: a compacted topic, one key per input partition once cleaned
        latest: dict[bytes, bytes | None] = {}
        for record in await read_topic(client, changelog, partitions, timeout_s=300):
            if record.key is not None:
                latest[record.key] = record.value
        for key, value in latest.items():
            topic, _, partition = key.decode("utf-8", "replace").rpartition(":")
            if topic in names and partition.isdigit() and value and value.split(b":")[0].isdigit():
                where = (topic, int(partition))
                offset, fingerprint = parse_position(value)
                if fingerprints is not None and fingerprint is not None and offset >= stored.get(where, 0):
                    fingerprints[where] = fingerprint
                stored[where] = max(stored.get(where, 0), offset)
    return stored


async def stored_positions_beyond_end(admin: Any, client: ClientConfig, topics: TopicSet, app_id: str) -> list[str]:
    """Input partitions where the worker group `app_id` has stored a position past
    the partition's end (the topic was recreated since: its offsets began again at
    0), or whose partition no longer exists. Kafka 3.9 gives aiokafka no topic ids,
    so the end offset is the evidence: a recreated topic that has already grown
    past the old positions is not seen. Empty when nothing is stored."""
    fingerprints: dict[tuple[str, int], str] = {}
    stored = await stored_positions(admin, client, topics, app_id, fingerprints)
    stored = {where: offset for where, offset in stored.items() if offset > 0}
    if not stored:
        return []
    counts = await _partition_counts(admin, sorted({topic for topic, _ in stored}))
    present = [TopicPartition(topic, partition) for topic, partition in stored if partition < counts.get(topic, 0)]
    by_topic: dict[str, list[int]] = {}
    for tp in present:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    ends = {TopicPartition(topic, partition): end
            for (topic, partition), end in (await partition_ends(client, by_topic)).items()}
    found = []
    to_compare = {}
    for (topic, partition), offset in sorted(stored.items()):
        end = ends.get(TopicPartition(topic, partition))
        if end is None:
            found.append(f"{topic}[{partition}]: stored position {offset}, the partition no longer exists")
        elif offset > end:
            found.append(f"{topic}[{partition}]: stored position {offset} is past the end offset {end}")
        elif (topic, partition) in fingerprints:
            to_compare[TopicPartition(topic, partition)] = (offset - 1, offset)
    # the record just before each position must be the one the group processed there
    found += await _unlike_processed(client, to_compare, fingerprints)
    return found


async def _unlike_processed(client: ClientConfig, spans: dict[Any, tuple[int, int]],
                            fingerprints: dict[tuple[str, int], str]) -> list[str]:
    """Partitions whose record before the stored position is not the record the group
    processed there (by fingerprint): the topic was recreated and has grown past the
    old position. A record no longer there (retention) cannot be compared: passed."""
    if not spans:
        return []
    found = []
    for record in await read_spans(client, spans):
        where = (record.topic, record.partition)
        if record_fingerprint(record.key, record.value, record.timestamp) != fingerprints[where]:
            found.append(f"{record.topic}[{record.partition}]: the record at offset {record.offset} is not the one "
                         f"this group processed there")
    return found
