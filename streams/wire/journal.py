"""The offline journal: JSON Lines of `{"topic": ..., "value": {...}}`, processed in file order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from streams.wire import decimals
from streams.wire.admission import admit_message
from streams.wire.roles import INPUTS
from streams.errors import InvalidMessage

TOPICS = tuple(INPUTS)


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal line: its 1-based line number, topic, and the decoded message or the error."""

    line: int
    topic: str | None
    message: Any = None
    error: InvalidMessage | None = None


@dataclass(frozen=True, slots=True)
class Line:
    """One journal line's shape: its topic, its value as parsed (not yet validated)
    and the record timestamp it carries; or why it has no usable shape."""

    line: int
    topic: str | None
    value: Any = None
    timestamp: int | None = None
    error: InvalidMessage | None = None


def lines_of(lines: Iterable[str | bytes]) -> Iterator[Line]:
    """Parse journal lines (JSON, a known topic, an epoch-ms `timestamp` if any);
    blank lines are skipped. The one reading of the journal format."""
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            data = _parsed(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            yield Line(number, None, error=InvalidMessage("INVALID_JSON", f"not valid JSON: {exc}"))
            continue
        topic = data.get("topic") if isinstance(data, dict) else None
        if not isinstance(topic, str) or topic not in INPUTS:
            shown = topic if not isinstance(topic, str) or len(topic) <= 40 else topic[:40] + "..."
            yield Line(number, None, error=InvalidMessage(
                "INVALID_FIELD", f"topic: must be one of {', '.join(TOPICS)}, got {shown!r}"))
            continue
        timestamp = data.get("timestamp")
        if timestamp is not None and (isinstance(timestamp, bool) or not isinstance(timestamp, int)):
            yield Line(number, topic, error=InvalidMessage(
                "INVALID_FIELD", "timestamp: the record timestamp must be epoch milliseconds"))
            continue
        yield Line(number, topic, data.get("value"), timestamp)


def _parsed(raw: str | bytes) -> Any:
    """`decimals.loads(raw)`: one pass of the fast parser, numbers with a fraction or
    an exponent straight to Decimal."""
    return decimals.loads(raw)


def read(lines: Iterable[str | bytes], max_future_skew_ms: int) -> Iterator[Entry]:
    """Decode journal lines; blank lines are skipped, bad lines come back with their error.

    A line may carry the Kafka record timestamp of its input as `"timestamp"`
    (epoch ms): an input stamped more than `max_future_skew_ms` ahead of it is
    FUTURE_TIMESTAMP, as in the worker (`admission`)."""
    for parsed in lines_of(lines):
        if parsed.error is not None:
            yield Entry(parsed.line, parsed.topic, error=parsed.error)
            continue
        try:
            yield Entry(parsed.line, parsed.topic,
                        admit_message(parsed.topic, parsed.value, max_future_skew_ms, parsed.timestamp))
        except InvalidMessage as exc:
            yield Entry(parsed.line, parsed.topic, error=exc)


def line(topic: str, value: Any) -> str:
    """One journal line for `value` (a wire dict or a message model)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    return decimals.dumps({"topic": topic, "value": value})
