"""The Confluent wire format, the one place the product frames and unframes a value:
magic byte 0, the schema id as 4 bytes big-endian, then the message's JSON.

`Framing` holds, per topic role, the schema id the product writes with and the ids
it accepts on an input (what `kafka.schema_registry` registered and read back, with
SIZER_SCHEMA_REGISTRY_URL set); `PLAIN` is the product without a registry. Every
writer of the product (the worker's outputs, `sizer publish`, `sizer control`, the
demo) frames with `Framing.written`; the worker, its instruments view and the
instruments agent read inputs with `Framing.read`; readers of topic history that
take both forms (the audit, `sizer tail`, `sizer status`) use `payload`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Mapping

from streams.errors import InvalidMessage

MAGIC = 0
# the id is a Java int in Confluent's serializers: signed, 4 bytes big-endian
HEADER = struct.Struct(">bi")


def subject(topic: str) -> str:
    """The TopicNameStrategy subject of a topic's values."""
    return f"{topic}-value"


def frame(schema_id: int, payload: bytes) -> bytes:
    """`payload` in the Confluent wire format under `schema_id` (a registry's id: 1 to
    2**31 - 1). Raises ValueError for an id a 4-byte signed int cannot hold."""
    if not 0 < schema_id < 2**31:
        raise ValueError(f"schema id {schema_id}: not a registry's id (1 to 2147483647)")
    return HEADER.pack(MAGIC, schema_id) + payload


def unframe(value: bytes) -> tuple[int, bytes]:
    """(schema id, payload) of a value in the Confluent wire format. Raises
    InvalidMessage SCHEMA_ID for a value that does not start with the magic byte, or
    ends inside the 5-byte header."""
    if not value or value[0] != MAGIC:
        first = f"first byte {value[0]:#04x}" if value else "an empty value"
        raise InvalidMessage("SCHEMA_ID", f"value: not in the Confluent wire format (magic byte 0 and a 4-byte "
                                          f"schema id), {first}")
    if len(value) < HEADER.size:
        raise InvalidMessage("SCHEMA_ID", f"value: a Confluent wire-format header cut short ({len(value)} of "
                                          f"{HEADER.size} bytes)")
    return HEADER.unpack_from(value)[1], value[HEADER.size:]


def payload(value: bytes | None) -> bytes | None:
    """The JSON of a value written by the product, framed or not (JSON text never starts
    with a zero byte): how readers of topic history take both forms."""
    if value is not None and value[:1] == b"\x00" and len(value) >= HEADER.size:
        return value[HEADER.size:]
    return value


@dataclass(frozen=True, slots=True)
class Framing:
    """Per topic role, the schema id the product writes with (`writes`) and the ids it
    accepts on an input (`accepts`: every version registered under the topic's subject
    when it was read). `accepts` None: inputs are plain JSON
    (SIZER_SCHEMA_REGISTRY_INPUTS=json, or no registry)."""

    writes: Mapping[str, int] = field(default_factory=dict)
    accepts: Mapping[str, frozenset[int]] | None = None
    subjects: Mapping[str, str] = field(default_factory=dict)  # role -> subject, for the reasons given
    either: bool = False  # inputs framed or not, any id (`payload`): readers of topic history

    def written(self, role: str, json_text: bytes) -> bytes:
        """A value the product writes to the topic of `role`: framed with its subject's
        id when one was registered for it, else the JSON as it is (the topics without
        a product schema: config, portfolios, dead letters)."""
        schema_id = self.writes.get(role)
        return json_text if schema_id is None else frame(schema_id, json_text)

    def read(self, role: str, value: bytes | None) -> bytes | None:
        """The JSON of an input of `role` (a tombstone stays None). Raises InvalidMessage
        SCHEMA_ID for a value not framed, cut short, or framed with an id that is not
        one of its subject's."""
        if self.either:
            return payload(value)
        if self.accepts is None or value is None:
            return value
        schema_id, json_text = unframe(value)
        if schema_id not in self.accepts.get(role, frozenset()):
            raise InvalidMessage("SCHEMA_ID", f"value: schema id {schema_id} is not registered under subject "
                                              f"{self.subjects.get(role, role)}")
        return json_text


PLAIN = Framing()
EITHER = Framing(either=True)
