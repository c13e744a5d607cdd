"""A lost broker is one WARNING per broker per outage and a metric, not a line for
every retry.

aiokafka logs, at ERROR or WARNING, every failed connection, fetch, heartbeat and
metadata request, from every client of the process (the worker has a consumer
and a transactional producer per input partition): a broker lost for 10 s wrote
about 1,000 lines across two workers, for an event the product rides out. Here
a filter on the process's one log handler (`streams.logs.logging_config`) lets
the first such line of an outage through, as one WARNING naming the broker
(or what failed, when aiokafka does not name it), and drops the rest; an outage
ends when nothing has failed against it for `QUIET_S`, with one INFO line
saying how long it lasted and how many lines were held back. While it lasts,
`sizer_broker_unavailable{broker}` is 1 (the worker wires `on_change` to it).
Any other aiokafka line passes as it is.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

QUIET_S = 15.0

# aiokafka 0.14's message templates that mean a broker (or the path to one) failed,
# and where in the record's args the broker is: an index, "address" (host, port),
# or a fixed name when aiokafka does not say which broker
SOURCES: dict[str, int | str] = {
    "Unable connect to node with id %s: %s": 0,
    "Failed fetch messages from %s: %s": 0,
    "Failed fetch offsets from %s: %s": 0,
    "Cannot send %r to %s: %r": 1,
    "Error sending %s to node %s [%s] -- marking coordinator dead": 1,
    'Unable connect to "%s:%s": %s': "address",
    "Unable to update metadata from %s": "metadata",
    "Error fetching metadata for topic %s: %s": "metadata",
    "Heartbeat send request failed: %s. Will retry.": "group coordinator",
    "Group Coordinator Request failed: %s": "group coordinator",
    "FindCoordinator Request failed: %s": "transaction coordinator",
    "Got error produce response: %s": "produce",
    "Could not send %r: %r": "produce",
}


def broker_of(record: logging.LogRecord) -> str | None:
    """Which broker (or path to one) an aiokafka line says failed; None for any other line."""
    if not record.name.startswith("aiokafka") or record.levelno < logging.WARNING:
        return None
    where = SOURCES.get(record.msg) if isinstance(record.msg, str) else None
    if where is None:
        return None
    args = record.args if isinstance(record.args, tuple) else ()
    if isinstance(where, int):
        return f"broker {args[where]}" if len(args) > where else "broker"
    if where == "address":
        return f"broker {args[0]}:{args[1]}" if len(args) > 1 else "broker"
    return where


class BrokerOutages(logging.Filter):
    """The filter (see the module). Thread-safe: faust's consumer logs from its own thread."""

    def __init__(self, quiet_s: float = QUIET_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.quiet_s = quiet_s
        self.clock = clock
        self.on_change: Callable[[str, bool], None] = lambda source, unavailable: None
        self._lock = threading.Lock()
        # source -> [started, last failure, lines held back]
        self._open: dict[str, list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        source = broker_of(record)
        if source is None:
            return True
        now = self.clock()
        with self._lock:
            outage = self._open.get(source)
            if outage is not None:
                outage[1] = now
                outage[2] += 1
                return False
            self._open[source] = [now, now, 0]
        self.on_change(source, True)
        original = record.getMessage()
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg = (f"Kafka {source} unavailable: %s; carrying on with the rest of the cluster "
                      f"(sizer_broker_unavailable; one line when it is back)")
        record.args = (original,)
        return True

    def expire(self) -> list[tuple[str, float, int]]:
        """End the outages quiet for `quiet_s`: (source, seconds it lasted, lines held
        back) of each, also logged once and told to `on_change`."""
        now = self.clock()
        with self._lock:
            ended = [(source, outage) for source, outage in self._open.items() if now - outage[1] >= self.quiet_s]
            for source, _ in ended:
                del self._open[source]
        log = logging.getLogger("streams.kafka")
        result = []
        for source, (started, last, held) in ended:
            log.info("Kafka %s: no failure for %.0f s, taken as back (failing for %.1f s, %d lines held back)",
                     source, self.quiet_s, last - started, int(held))
            self.on_change(source, False)
            result.append((source, last - started, int(held)))
        return result


OUTAGES = BrokerOutages()


def shared() -> BrokerOutages:
    """The process's one filter (a `logging.config` factory)."""
    return OUTAGES
