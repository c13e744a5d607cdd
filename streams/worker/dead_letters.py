"""The one handler for input that is not admitted (`streams.wire.admission`).

The dead letter keeps the original bytes as its value and key, and says why and
where it came from in headers, so an operator can fix and re-publish it as is.

A record can be too big to dead-letter as it is: the broker takes records up to
its own limit (1,048,588 bytes by default), larger than the worker's producer
sends (`max_request_size`, 1,000,000 in faust). Sending such a record whole would
fail the batch, and the worker would exit on it at every start. So a key or value
that does not fit is replaced by its first `PREVIEW_BYTES`, with its size and
SHA-256 digest in headers: enough to find the original on the source topic (at
`sizer.source.offset`, while retention keeps it) and to prove it is that one.

If the send itself is refused (the producer's own size check, or anything else
raised before the record is queued), the dead letter is retried once as a summary
of the record with no original bytes, and the failure is counted in
`sizer_dead_letter_failures_total`; only when that fails too does the error
reach the batch (then the broker, not the input, is the problem).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from streams.errors import InvalidMessage

log = logging.getLogger("streams.worker")

REASON = "sizer.reason"
DETAIL = "sizer.detail"
SOURCE_TOPIC = "sizer.source.topic"
SOURCE_PARTITION = "sizer.source.partition"
SOURCE_OFFSET = "sizer.source.offset"
SOURCE_TIMESTAMP = "sizer.source.timestamp"  # the record's Kafka timestamp, epoch ms ("" when it has none)
# present only when the original bytes did not fit: "<size> <sha256 hex>" of the original
KEY_DIGEST = "sizer.key.original"
VALUE_DIGEST = "sizer.value.original"
TRUNCATED = "sizer.truncated"  # why the dead letter holds only the first bytes
# on the dead letter of a record with a null key and a null value, which the
# producer cannot write as such: its value is then empty
BOTH_NULL = "sizer.original.null"

PREVIEW_BYTES = 1024
# room kept under the producer's limit for the headers (source topic names, detail)
HEADROOM_BYTES = 16 * 1024
DETAIL_MAX_CHARS = 2000


def headers_for(error: InvalidMessage, topic: str, partition: int, offset: int,
                timestamp_ms: int | None) -> list[tuple[str, bytes]]:
    return [
        (REASON, error.code.encode()),
        (DETAIL, error.detail[:DETAIL_MAX_CHARS].encode("utf-8", "replace")),
        (SOURCE_TOPIC, topic.encode()),
        (SOURCE_PARTITION, str(partition).encode()),
        (SOURCE_OFFSET, str(offset).encode()),
        (SOURCE_TIMESTAMP, b"" if timestamp_ms is None else str(timestamp_ms).encode()),
    ]


def _digest(data: bytes) -> bytes:
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode()


def fitted(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]],
           max_bytes: int) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """(key, value, headers) of a dead letter no larger than `max_bytes` as the
    producer measures it: the originals when they fit, else each of key and value
    that is over half the budget cut to its first PREVIEW_BYTES, with its size and
    digest in a header and the reason in `sizer.truncated`."""
    if DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers) <= max_bytes:
        return key, value, headers
    budget = max(max_bytes - HEADROOM_BYTES, 2 * PREVIEW_BYTES) // 2
    headers = list(headers)
    cut = []
    if key is not None and len(key) > budget:
        headers.append((KEY_DIGEST, _digest(key)))
        cut.append(f"key {len(key)} bytes")
        key = key[:PREVIEW_BYTES]
    if value is not None and len(value) > budget:
        headers.append((VALUE_DIGEST, _digest(value)))
        cut.append(f"value {len(value)} bytes")
        value = value[:PREVIEW_BYTES]
    headers.append((TRUNCATED, f"{', '.join(cut)}: over the dead-letter limit of {max_bytes} bytes; "
                                f"first {PREVIEW_BYTES} bytes kept".encode()))
    return key, value, headers


async def dead_letter(outputs: Any, dlq_topic: str, message: Any, timestamp_ms: int | None, error: InvalidMessage,
                      metrics: Any, role: str, max_bytes: int) -> None:
    """Send the record's original bytes (`message`: .topic, .partition, .offset, .key,
    .value) to the dead-letter topic with the reason; log and count it. Never raises
    for the record's own sake (see the module docstring)."""
    where = {"topic": message.topic, "partition": message.partition, "offset": message.offset,
             "portfolio": message.key.decode("utf-8", "replace")[:256] if message.key is not None else None}
    log.warning("dead letter %s[%d]@%d: %s", message.topic, message.partition, message.offset,
                str(error)[:500], extra={**where, "event": "dead_letter", "reason": error.code})
    metrics.dead_lettered(role, error.code)
    headers = headers_for(error, message.topic, message.partition, message.offset, timestamp_ms)
    key, value, headers = fitted(message.key, message.value, headers, max_bytes)
    if key is None and value is None:
        value, headers = b"", [*headers, (BOTH_NULL, b"key and value")]
    try:
        await outputs.send(dlq_topic, key, value, headers=headers)
    except Exception as exc:  # noqa: BLE001 - refused before it was queued: nothing of it is in the transaction
        log.error("dead letter %s[%d]@%d refused (%r); sending its summary instead",
                  message.topic, message.partition, message.offset, exc,
                  extra={**where, "event": "dead_letter_refused", "reason": error.code})
        metrics.dead_letter_failures.labels(role).inc()
        summary = [*headers, (TRUNCATED, f"the dead letter was refused: {type(exc).__name__}: {exc}"[:500].encode())]
        for name, original in ((KEY_DIGEST, message.key), (VALUE_DIGEST, message.value)):
            if original is not None and all(header != name for header, _ in summary):
                summary.append((name, _digest(original)))
        await outputs.send(dlq_topic, None, b"", headers=summary)
