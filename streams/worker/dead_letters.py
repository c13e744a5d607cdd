"""The one handler for input that cannot be decoded or validated.

The dead letter keeps the original bytes as its value and key, and says why and
where it came from in headers, so an operator can fix and re-publish it as is.
"""

from __future__ import annotations

import logging
from typing import Any

from streams.errors import InvalidMessage

log = logging.getLogger("streams.worker")

REASON = "sizer.reason"
DETAIL = "sizer.detail"
SOURCE_TOPIC = "sizer.source.topic"
SOURCE_PARTITION = "sizer.source.partition"
SOURCE_OFFSET = "sizer.source.offset"


def headers_for(error: InvalidMessage, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        (REASON, error.code.encode()),
        (DETAIL, error.detail.encode("utf-8", "replace")),
        (SOURCE_TOPIC, topic.encode()),
        (SOURCE_PARTITION, str(partition).encode()),
        (SOURCE_OFFSET, str(offset).encode()),
    ]


async def dead_letter(outputs: Any, dlq_topic: str, event: Any, error: InvalidMessage, metrics: Any,
                      role: str) -> None:
    """Send the event's original bytes to the dead-letter topic with the reason; log and count it."""
    message = event.message
    log.warning("dead letter %s[%d]@%d: %s", message.topic, message.partition, message.offset, error)
    metrics.dead_lettered(role, error.code)
    await outputs.send(dlq_topic, message.key, message.value,
                       headers=headers_for(error, message.topic, message.partition, message.offset))
