"""SIZER_LOG_FORMAT=json: one JSON object a line, the input's position, tracebacks inside."""

from __future__ import annotations

import io
import json
import logging
from types import SimpleNamespace

from streams.logs import InputContext, json_formatter


def logger_to(stream: io.StringIO) -> logging.Logger:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    handler.addFilter(InputContext())
    logger = logging.getLogger("test.logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def test_a_line_is_one_json_object_with_level_logger_message_and_the_traceback_inside():
    stream = io.StringIO()
    log = logger_to(stream)
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        log.exception("processing failed %s[%d]@%d", "signals", 3, 17,
                      extra={"topic": "signals", "partition": 3, "offset": 17, "portfolio": "p1", "signal_id": "s-1"})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["level"] == "ERROR" and line["logger"] == "test.logs"
    assert line["message"] == "processing failed signals[3]@17"
    assert (line["topic"], line["partition"], line["offset"], line["portfolio"], line["signal_id"]) == (
        "signals", 3, 17, "p1", "s-1")
    assert line["traceback"].startswith("Traceback") and "ValueError: bad\nvalue" in line["traceback"]


def test_the_input_under_way_is_added_from_faust_current_event():
    from streams.faust_compat.events import current

    stream = io.StringIO()
    log = logger_to(stream)
    class Event:  # faust keeps a weak reference to the current event
        message = SimpleNamespace(topic="fills", partition=2, offset=40, key=b"p7")

    event = Event()
    with current(event):
        log.warning("something about this input")
    log.info("nothing under way")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["topic"], first["partition"], first["offset"], first["portfolio"]) == ("fills", 2, 40, "p7")
    assert "topic" not in second
