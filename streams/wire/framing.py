"""The Confluent wire format, the one place the product frames and unframes a value:
magic byte 0, the schema id as 4 bytes big-endian, then the message's JSON.

`Framing` holds, per topic role, the schema id the product writes with and the ids
it accepts on an input (what `kafka.schema_registry` registered and read back, with
SIZER_SCHEMA_REGISTRY_URL set); `PLAIN` is the product without a registry. Every
writer of the product (the worker's outputs, `sizer publish`, `sizer control`, the
demo) frames with `Framing.written`; the worker, its instruments view and the
instruments agent read inputs with `Framing.admit` (or `Framing.known`, then
`Framing.read`); readers of topic history that take both forms (the audit, `sizer
tail`, `sizer status`) use `payload`.

An id not among those read at start-up (a version a producer registered since) is
asked of the registry once (`SchemaIds`): accepted when the registry holds it under
the input's subject, refused `SCHEMA_ID` otherwise.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterable, Mapping

from streams.errors import InvalidMessage, RegistryUnavailable

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


def framed_id(value: bytes | None) -> int | None:
    """The schema id of a value `payload` reads as framed; None for one it reads as it is."""
    if value is not None and value[:1] == b"\x00" and len(value) >= HEADER.size:
        return int(HEADER.unpack_from(value)[1])
    return None


def payload(value: bytes | None) -> bytes | None:
    """The JSON of a value written by the product, framed or not (JSON text never starts
    with a zero byte): how readers of topic history take both forms."""
    if value is not None and value[:1] == b"\x00" and len(value) >= HEADER.size:
        return value[HEADER.size:]
    return value


# How long the registry's "not under this subject" answer, or its being unreachable, is
# taken as it is before the registry is asked again; and how many lookups of ids not
# known yet it may receive in that time, whatever the ids (a flood of bogus ids).
RECHECK_S = 10.0
LOOKUPS_PER_RECHECK = 20
KEEP_ANSWERS = 1024  # beyond these, "no such id" answers older than RECHECK_S are forgotten


class SchemaIds:
    """The ids a registry holds beyond those read at start-up, learned on first sight.

    `subjects_of(id)` asks the registry which subjects an id is registered under (an
    empty set: no such id), raising RegistryUnavailable when it cannot be asked. An id
    found under a subject stays accepted for it (a registry never reassigns an id); an
    id not found under it is refused without asking again for RECHECK_S, and so is
    every unknown id for RECHECK_S after the registry could not be asked. At most
    LOOKUPS_PER_RECHECK lookups go out per RECHECK_S; lookups of one id in flight at
    once are one request. `clock`: seconds, monotonic (injected by tests)."""

    def __init__(self, subjects_of: Callable[[int], Awaitable[frozenset[str]]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._subjects_of = subjects_of
        self._clock = clock
        self._answers: dict[int, tuple[frozenset[str], float]] = {}  # id -> (its subjects, when asked)
        self._pending: dict[int, asyncio.Future[frozenset[str]]] = {}
        self._asked: deque[float] = deque()  # when each recent lookup went out
        self._down: tuple[float, str] | None = None  # (until when, why) the registry is not asked

    def belongs(self, schema_id: int, subject_name: str) -> bool:
        """Whether the registry answered that `schema_id` is registered under `subject_name`."""
        answer = self._answers.get(schema_id)
        return answer is not None and subject_name in answer[0]

    async def learn(self, schema_id: int, subject_name: str) -> None:
        """Ask the registry about `schema_id` unless it is known under `subject_name` or
        was answered less than RECHECK_S ago (then `belongs` says). Raises InvalidMessage
        SCHEMA_REGISTRY_UNAVAILABLE when the registry cannot be asked, SCHEMA_ID when
        the lookups of the last RECHECK_S are spent."""
        now = self._clock()
        answer = self._answers.get(schema_id)
        if answer is not None and (subject_name in answer[0] or now - answer[1] < RECHECK_S):
            return
        if self._down is not None and now < self._down[0]:
            raise _unavailable(schema_id, subject_name, self._down[1])
        pending = self._pending.get(schema_id)
        if pending is None:
            while self._asked and now - self._asked[0] >= RECHECK_S:
                self._asked.popleft()
            if len(self._asked) >= LOOKUPS_PER_RECHECK:
                raise InvalidMessage("SCHEMA_ID", f"value: schema id {schema_id} is not one registered under subject "
                                                  f"{subject_name} at start-up, and was not looked up: "
                                                  f"{LOOKUPS_PER_RECHECK} unknown ids were in the last {RECHECK_S:g} s")
            self._asked.append(now)
            pending = self._pending[schema_id] = asyncio.ensure_future(self._ask(schema_id))
            # its failure is read even when every reader waiting on it was cancelled
            pending.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:
            await asyncio.shield(pending)
        except RegistryUnavailable as exc:
            raise _unavailable(schema_id, subject_name, str(exc)) from None

    async def _ask(self, schema_id: int) -> frozenset[str]:
        try:
            subjects = await self._subjects_of(schema_id)
        except RegistryUnavailable as exc:
            self._down = (self._clock() + RECHECK_S, str(exc))
            raise
        finally:
            del self._pending[schema_id]
        now = self._clock()
        if len(self._answers) >= KEEP_ANSWERS:
            # an id registered under some subject stays (the registry's own ids bound
            # them); a refusal of an id it does not hold is forgotten once it is stale
            self._answers = {known: answer for known, answer in self._answers.items()
                             if answer[0] or now - answer[1] < RECHECK_S}
        self._answers[schema_id] = (subjects, now)
        return subjects


def _unavailable(schema_id: int, subject_name: str, why: str) -> InvalidMessage:
    return InvalidMessage("SCHEMA_REGISTRY_UNAVAILABLE", f"value: schema id {schema_id} is not one registered under "
                                                         f"subject {subject_name} at start-up, and the registry "
                                                         f"could not be asked: {why}")


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
    # ids registered since start-up, asked of the registry (None: only `accepts`)
    learned: SchemaIds | None = None

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
        if not self._accepted(role, schema_id):
            raise InvalidMessage("SCHEMA_ID", f"value: schema id {schema_id} is not registered under subject "
                                              f"{self.subjects.get(role, role)}")
        return json_text

    def _accepted(self, role: str, schema_id: int) -> bool:
        assert self.accepts is not None
        return schema_id in self.accepts.get(role, frozenset()) or (
            self.learned is not None and self.learned.belongs(schema_id, self.subjects.get(role, role)))

    async def known(self, role: str, value: bytes | None) -> None:
        """Before `read`: when `value` is framed with an id not known under the subject
        of `role`, ask the registry about it (`SchemaIds.learn`). Raises InvalidMessage
        SCHEMA_REGISTRY_UNAVAILABLE (the registry could not be asked) or SCHEMA_ID (too
        many unknown ids of late); a value `read` refuses anyway is left to it."""
        if self.learned is None or self.either or self.accepts is None or value is None:
            return
        try:
            schema_id, _ = unframe(value)
        except InvalidMessage:
            return
        # ids from 1: one no registry can hold (0, negative) is refused by `read` unasked
        if schema_id > 0 and not self._accepted(role, schema_id):
            await self.learned.learn(schema_id, self.subjects.get(role, role))

    async def known_all(self, values: Iterable[tuple[str, bytes | None]]) -> None:
        """`known` for a batch's values (role, value) at once: each id not known yet is
        asked of the registry concurrently, in the values' order, so a batch waits on
        its lookups about one SIZER_SCHEMA_REGISTRY_TIMEOUT_S, not one after the other
        (then liveness would fail on a slow registry). Refusals are left to each
        value's own `admit`, which finds the answers here."""
        if self.learned is None or self.either or self.accepts is None:
            return
        unknown: dict[tuple[str, int], bytes] = {}
        for role, value in values:
            schema_id = framed_id(value)
            if schema_id is not None and schema_id > 0 and value is not None and not self._accepted(role, schema_id):
                unknown.setdefault((role, schema_id), value)
        asked = await asyncio.gather(*(self.known(role, value) for (role, _), value in unknown.items()),
                                     return_exceptions=True)
        for answer in asked:
            if isinstance(answer, BaseException) and not isinstance(answer, InvalidMessage):
                raise answer

    async def admit(self, role: str, value: bytes | None) -> bytes | None:
        """`read`, after asking the registry about an id not known yet (`known`)."""
        await self.known(role, value)
        return self.read(role, value)


PLAIN = Framing()
EITHER = Framing(either=True)
