"""How the product logs: readable text on a terminal (the default), or one JSON
object a line for a log pipeline (`SIZER_LOG_FORMAT=json`).

The JSON is written by python-json-logger's `JsonFormatter`: `timestamp`,
`level`, `logger`, `message`, a traceback inside the object (`traceback`), and
whatever the code passed as `extra`. `InputContext` adds where the line comes
from when an input is being processed (faust's current event): `topic`,
`partition`, `offset`, and `portfolio` (the record's key: every signal, fill and
control is keyed by its portfolio), unless the call already named them.
Code that knows more names it itself: `extra={"signal_id": ...}`.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any, Literal

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
# logging.LogRecord attributes as they appear in a JSON line
RENAMED = {"levelname": "level", "name": "logger", "exc_info": "traceback"}
# The fields a line may carry about the input it concerns (docs: operating, "Logs").
INPUT_FIELDS = ("topic", "partition", "offset", "portfolio", "signal_id")


class InputContext(logging.Filter):
    """Adds topic, partition, offset and portfolio of the input under way, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "topic", None) is not None:
            return True
        try:
            from streams.faust_compat.events import current_event

            event = current_event()
        except Exception:  # noqa: BLE001 - no faust, or no event: nothing to add
            event = None
        message = getattr(event, "message", None)
        if message is None:
            return True
        record.topic = message.topic
        record.partition = message.partition
        record.offset = message.offset
        if getattr(record, "portfolio", None) is None and isinstance(message.key, (bytes, bytearray)):
            record.portfolio = bytes(message.key).decode("utf-8", "replace")
        return True


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter("{levelname}{name}{message}", style="{", rename_fields=RENAMED, timestamp=True)


def logging_config(log_format: LogFormat, level: str | int) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the whole process: one handler on stderr
    (text or JSON), every logger through it, the input context on every line."""
    level_name = logging.getLevelName(level) if isinstance(level, int) else level.upper()
    formatter: dict[str, Any] = (
        {"()": "streams.logs.json_formatter"} if log_format == "json" else {"format": TEXT_FORMAT})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"input": {"()": "streams.logs.InputContext"},
                    # a lost broker: one WARNING per outage, not a line per retry
                    "outages": {"()": "streams.kafka.outages.shared"}},
        "formatters": {"sizer": formatter},
        "handlers": {"sizer": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                               "formatter": "sizer", "filters": ["outages", "input"]}},
        "root": {"level": level_name, "handlers": ["sizer"]},
    }


def configure(log_format: LogFormat, level: str | int) -> None:
    """Set up logging for a command that is not the worker (the worker hands
    `logging_config` to faust, which installs it)."""
    logging.root.handlers.clear()
    logging.config.dictConfig(logging_config(log_format, level))


