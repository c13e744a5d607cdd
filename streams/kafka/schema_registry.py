"""The product's one Schema Registry client (Confluent's REST API, as served by
Confluent Schema Registry and by Apicurio Registry's compatibility API), and the
Confluent wire format: magic byte 0, the schema id as 4 bytes big-endian, then
the message's JSON.

Subjects follow the TopicNameStrategy: a topic's values are registered under
`<topic>-value`. The schemas are the product's JSON Schemas
(`streams.wire.schemas`, checked in under topics/schemas/v<N>/)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Mapping

from streams.errors import InvalidMessage, RegistryUnavailable

MAGIC = 0
HEADER = struct.Struct(">bI")
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def subject(topic: str) -> str:
    """The TopicNameStrategy subject of a topic's values."""
    return f"{topic}-value"


def frame(schema_id: int, payload: bytes) -> bytes:
    """`payload` in the Confluent wire format under `schema_id`."""
    return HEADER.pack(MAGIC, schema_id) + payload


def unframe(value: bytes) -> tuple[int, bytes]:
    """(schema id, payload) of a record in the Confluent wire format. Raises
    InvalidMessage SCHEMA_ID when the value does not start with the magic byte and an id."""
    if len(value) < HEADER.size or value[0] != MAGIC:
        first = f"first byte {value[0]:#04x}" if value else "an empty value"
        raise InvalidMessage("SCHEMA_ID", f"value: not in the Confluent wire format (magic byte 0 and a 4-byte "
                                          f"schema id), {first}")
    return HEADER.unpack_from(value)[1], value[HEADER.size:]


@dataclass(frozen=True, slots=True)
class Schemas:
    """The ids the product writes its outputs with ({topic: id}) and the ids it accepts
    on each input topic ({topic: ids registered under the topic's subject})."""

    writes: Mapping[str, int]
    accepts: Mapping[str, frozenset[int]]

    def payload(self, topic: str, value: bytes) -> bytes:
        """The JSON of an input record of `topic`. Raises InvalidMessage SCHEMA_ID when
        the record is not framed, or its id is not one of the topic's subject."""
        schema_id, payload = unframe(value)
        if schema_id not in self.accepts.get(topic, frozenset()):
            raise InvalidMessage("SCHEMA_ID", f"value: schema id {schema_id} is not registered under subject "
                                              f"{subject(topic)}")
        return payload


class SchemaRegistry:
    """A Schema Registry at `url` (the base of Confluent's API, e.g.
    http://registry:8081 or an Apicurio Registry's .../apis/ccompat/v6)."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    async def _call(self, session: Any, method: str, path: str, body: Any = None) -> Any:
        import aiohttp

        try:
            async with session.request(method, f"{self.url}{path}", json=body,
                                       headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}) as response:
                text = await response.text()
                if response.status >= 300:
                    raise RegistryUnavailable(f"Schema Registry {self.url}: {method} {path} answered "
                                              f"{response.status}: {text[:200]}")
                return json.loads(text)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RegistryUnavailable(f"Schema Registry {self.url} unreachable: {type(exc).__name__}: {exc}") from None

    def _session(self) -> Any:
        import aiohttp

        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def register(self, topic: str, schema: str) -> int:
        """Register a JSON Schema under the topic's subject (idempotent); its id."""
        async with self._session() as session:
            answer = await self._call(session, "POST", f"/subjects/{subject(topic)}/versions",
                                      {"schemaType": "JSON", "schema": schema})
        return int(answer["id"])

    async def ids(self, topic: str) -> frozenset[int]:
        """The ids of every version registered under the topic's subject."""
        async with self._session() as session:
            versions = await self._call(session, "GET", f"/subjects/{subject(topic)}/versions")
            found = set()
            for version in versions:
                answer = await self._call(session, "GET", f"/subjects/{subject(topic)}/versions/{version}")
                found.add(int(answer["id"]))
        return frozenset(found)

    async def prepare(self, schemas: Mapping[str, str], outputs: set[str]) -> Schemas:
        """Register `schemas` ({topic: JSON Schema text}) and read back every id each
        input topic's subject holds: the ids to write `outputs` with and to accept."""
        writes, accepts = {}, {}
        for topic, schema in schemas.items():
            schema_id = await self.register(topic, schema)
            if topic in outputs:
                writes[topic] = schema_id
            else:
                accepts[topic] = await self.ids(topic) | {schema_id}
        return Schemas(writes, accepts)


async def product_schemas(url: str, topic_names: Mapping[str, str]) -> Schemas:
    """Register every JSON Schema of the product (`streams.wire.schemas`) under its
    topic's subject at the registry `url`; `topic_names`: role -> topic name."""
    from streams.wire import schemas

    texts, outputs = {}, set()
    for name, (_, role, mode) in schemas.MESSAGES.items():
        texts[topic_names[role]] = schemas.render(name)
        if mode == "serialization":
            outputs.add(topic_names[role])
    return await SchemaRegistry(url).prepare(texts, outputs)
