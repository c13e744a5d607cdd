"""The offline journal: JSON Lines of `{"topic": ..., "value": {...}}`, processed in file order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from streams import decimals
from streams.errors import InvalidMessage
from streams.models import Fill, Instrument, Signal, validate

MODELS: dict[str, Any] = {"instruments": Instrument, "signals": Signal, "fills": Fill}


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal line: its 1-based line number, topic, and the decoded message or the error."""

    line: int
    topic: str | None
    message: Any = None
    error: InvalidMessage | None = None


def read(lines: Iterable[str | bytes]) -> Iterator[Entry]:
    """Decode journal lines; blank lines are skipped, bad lines come back with their error."""
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            data = decimals.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            yield Entry(number, None, error=InvalidMessage("INVALID_JSON", f"not valid JSON: {exc}"))
            continue
        topic = data.get("topic") if isinstance(data, dict) else None
        if topic not in MODELS:
            yield Entry(number, None, error=InvalidMessage(
                "INVALID_FIELD", f"topic: must be one of {', '.join(MODELS)}, got {topic!r}"))
            continue
        try:
            yield Entry(number, topic, validate(MODELS[topic], data.get("value")))
        except InvalidMessage as exc:
            yield Entry(number, topic, error=exc)


def line(topic: str, value: Any) -> str:
    """One journal line for `value` (a wire dict or a message model)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    return decimals.dumps({"topic": topic, "value": value})
