"""The offline journal: JSON Lines of `{"topic": ..., "value": {...}}`, processed in file order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from streams import decimals
from streams.admission import INPUTS, admit_message
from streams.errors import InvalidMessage

TOPICS = tuple(INPUTS)


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal line: its 1-based line number, topic, and the decoded message or the error."""

    line: int
    topic: str | None
    message: Any = None
    error: InvalidMessage | None = None


def read(lines: Iterable[str | bytes], max_future_skew_ms: int) -> Iterator[Entry]:
    """Decode journal lines; blank lines are skipped, bad lines come back with their error.

    A line may carry the Kafka record timestamp of its input as `"timestamp"`
    (epoch ms): an input stamped more than `max_future_skew_ms` ahead of it is
    FUTURE_TIMESTAMP, as in the worker (`admission`)."""
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            data = decimals.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            yield Entry(number, None, error=InvalidMessage("INVALID_JSON", f"not valid JSON: {exc}"))
            continue
        topic = data.get("topic") if isinstance(data, dict) else None
        if not isinstance(topic, str) or topic not in INPUTS:
            shown = topic if not isinstance(topic, str) or len(topic) <= 40 else topic[:40] + "..."
            yield Entry(number, None, error=InvalidMessage(
                "INVALID_FIELD", f"topic: must be one of {', '.join(TOPICS)}, got {shown!r}"))
            continue
        timestamp = data.get("timestamp")
        if timestamp is not None and (isinstance(timestamp, bool) or not isinstance(timestamp, int)):
            yield Entry(number, topic, error=InvalidMessage(
                "INVALID_FIELD", "timestamp: the record timestamp must be epoch milliseconds"))
            continue
        try:
            yield Entry(number, topic, admit_message(topic, data.get("value"), max_future_skew_ms, timestamp))
        except InvalidMessage as exc:
            yield Entry(number, topic, error=exc)


def line(topic: str, value: Any) -> str:
    """One journal line for `value` (a wire dict or a message model)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    return decimals.dumps({"topic": topic, "value": value})
