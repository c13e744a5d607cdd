"""The instruments in force, by the one rule the worker's instruments agent, every
worker's view (`worker.instruments.InstrumentView`) and the audit share: which
records of the compacted `instruments` topic set an instrument, which delete one,
and when a re-published copy of a valid record stands in for an invalid update.
"""

from __future__ import annotations

import logging
from typing import Any

from streams.errors import InvalidMessage
from streams.wire.admission import admit_record
from streams.wire.framing import PLAIN, Framing
from streams.wire.models import Instrument

# the worker's logger: the book is the worker's view of the topic (the audit replays it)
log = logging.getLogger("streams.worker")

# On a copy of a valid instrument record re-published by the worker: the offset of
# the invalid update (or of the copy the view declined) it stands in for.
RESTORES = "sizer.restores"


def admit_instrument(key: bytes | None, value: bytes | None, timestamp_ms: int | None) -> Instrument | None:
    """A record of the compacted `instruments` topic as the instrument it sets, or
    None for a tombstone keyed by a symbol (that symbol's deletion: compaction's own
    way to remove a key). Everything else is InvalidMessage, as `admit_record` says;
    a tombstone with a null or non-UTF-8 key names no symbol: NULL_VALUE or KEY_MISMATCH."""
    if value is None and key is not None:
        try:
            key.decode()
        except UnicodeDecodeError:
            raise InvalidMessage("KEY_MISMATCH", "key: a tombstone whose key is not UTF-8 names no symbol") from None
        return None
    # instruments carry no event time: the skew does not apply
    return admit_record("instruments", key, value, timestamp_ms, 0)


def restores(headers: Any) -> int | None:
    """The offset a re-published copy stands in for, or None for any other record."""
    for name, raw in headers or ():
        if name == RESTORES:
            try:
                return int(raw)
            except (TypeError, ValueError):
                return None
    return None


class InstrumentBook:
    """The instruments in force after the records of the compacted topic read so far,
    by the one rule the worker's agent, every worker's view and the audit share."""

    def __init__(self, framing: Framing = PLAIN) -> None:
        # how values are read (wire.framing: the Confluent wire format with a Schema Registry)
        self.framing = framing
        self.instruments: dict[str, Instrument] = {}
        # symbol -> (offset, value bytes) of the record in force
        self.in_force: dict[str, tuple[int, bytes]] = {}
        self._deleted: dict[str, int] = {}  # symbol -> offset of its latest deletion

    def apply(self, key: bytes | None, value: bytes | None, offset: int, timestamp_ms: int | None = None,
              headers: Any = None) -> bool:
        """One record of the compacted topic, admitted as the instruments agent admits
        it: an instrument, or a keyed tombstone that removes one. What the agent
        dead-letters is skipped here. A re-published copy (`RESTORES`) is applied
        only while the record in force is not newer than the update it stands in
        for; otherwise the agent re-publishes the newer one (`check_instrument`).
        Returns whether the record changed what is in force."""
        try:
            instrument = admit_instrument(key, self.framing.read("instruments", value), timestamp_ms)
        except InvalidMessage as exc:
            log.debug("skipping invalid instrument at offset %d: %s", offset, exc)
            return False
        if instrument is None:
            assert key is not None
            symbol = key.decode()
            self.instruments.pop(symbol, None)
            self.in_force.pop(symbol, None)
            self._deleted[symbol] = offset
            return True
        stands_in_for = restores(headers)
        if stands_in_for is not None:
            # (the record it copies may be gone: compaction keeps only the copy)
            current = self.in_force.get(instrument.symbol)
            if (current is not None and current[0] > stands_in_for) or \
                    self._deleted.get(instrument.symbol, -1) > stands_in_for:
                log.info("not applying the copy of %s at %d: a newer record or a deletion came after %d",
                         instrument.symbol, offset, stands_in_for)
                return False
        assert value is not None
        self.instruments[instrument.symbol] = instrument
        self.in_force[instrument.symbol] = (offset, value)
        return True
