"""The product's one Schema Registry client (Confluent's REST API, as served by
Confluent Schema Registry and by Apicurio Registry's compatibility API): it
registers the product's JSON Schemas and reads back the ids each topic's subject
holds, as the `wire.framing.Framing` every client of the product writes and reads
with (the wire format itself lives there).

Subjects follow the TopicNameStrategy: a topic's values are registered under
`<topic>-value`. The schemas are the product's JSON Schemas
(`streams.wire.schemas`, checked in under topics/schemas/v<N>/)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping

from streams.errors import RegistryUnavailable
from streams.wire.framing import PLAIN, Framing, subject

if TYPE_CHECKING:
    from streams.kafka.settings import ConnectionSettings
    from streams.kafka.topics import TopicSet

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class SchemaRegistry:
    """A Schema Registry at `url` (the base of Confluent's API, e.g.
    http://registry:8081 or an Apicurio Registry's .../apis/ccompat/v6)."""

    def __init__(self, url: str, timeout_s: float = 10.0, auth: tuple[str, str] | None = None,
                 ssl_context: Any = None) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.auth = auth  # (username, password): HTTP basic authentication
        self.ssl_context = ssl_context  # https: verifies the registry's certificate; None: the system's CAs

    async def _call(self, session: Any, method: str, path: str, body: Any = None) -> Any:
        import aiohttp

        try:
            async with session.request(method, f"{self.url}{path}", json=body,
                                       headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RegistryUnavailable(f"Schema Registry {self.url} unreachable: {type(exc).__name__}: {exc}") from None
        if status >= 300:
            raise RegistryUnavailable(f"Schema Registry {self.url} refused {method} {path}: {status} "
                                      f"{_message(text)}{_why(status, path)}")
        try:
            return json.loads(text)
        except ValueError:
            raise RegistryUnavailable(f"Schema Registry {self.url}: {method} {path} answered {status} with what is "
                                      f"not JSON (is the URL the base of Confluent's API?): {_message(text)}") from None

    def _session(self) -> Any:
        import aiohttp

        auth = aiohttp.BasicAuth(*self.auth) if self.auth is not None else None
        connector = aiohttp.TCPConnector(ssl=self.ssl_context) if self.ssl_context is not None else None
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s), auth=auth,
                                     connector=connector)

    async def register(self, topic: str, schema: str) -> int:
        """Register a JSON Schema under the topic's subject (idempotent); its id."""
        async with self._session() as session:
            answer = await self._call(session, "POST", f"/subjects/{subject(topic)}/versions",
                                      {"schemaType": "JSON", "schema": schema})
        return _id(answer, self.url)

    async def ids(self, topic: str) -> frozenset[int]:
        """The ids of every version registered under the topic's subject."""
        async with self._session() as session:
            versions = await self._call(session, "GET", f"/subjects/{subject(topic)}/versions")
            found = set()
            for version in versions:
                answer = await self._call(session, "GET", f"/subjects/{subject(topic)}/versions/{version}")
                found.add(_id(answer, self.url))
        return frozenset(found)

    async def framing(self, schemas: Mapping[str, tuple[str, str]], inputs: set[str], framed_inputs: bool) -> Framing:
        """Register `schemas` ({role: (topic, JSON Schema text)}) and read back every id
        each input's subject holds: the ids to write each role with, and to accept on
        `inputs` (when `framed_inputs`; else inputs are read as plain JSON)."""
        writes, accepts = {}, {}
        for role, (topic, schema) in schemas.items():
            writes[role] = await self.register(topic, schema)
            if role in inputs:
                accepts[role] = await self.ids(topic) | {writes[role]}
        if not framed_inputs:
            # the worker reads these topics as plain JSON: a writer of the product
            # (`sizer publish`, `sizer control`) writes them so, or the worker would
            # dead-letter all it writes INVALID_JSON
            writes = {role: schema_id for role, schema_id in writes.items() if role not in inputs}
        return Framing(writes, accepts if framed_inputs else None,
                       {role: subject(topic) for role, (topic, _) in schemas.items()})


def _message(text: str) -> str:
    """The registry's own message of an error answer, on one line."""
    try:
        answer = json.loads(text)
        text = str(answer.get("message", text)) if isinstance(answer, dict) else text
    except ValueError:
        pass
    return " ".join(text.split())[:200]


def _why(status: int, path: str) -> str:
    if status == 409 and path.endswith("/versions"):
        return (" (the product's schema is incompatible with what the subject holds under its compatibility "
                "rule: register it as a new subject, or relax the rule)")
    return ""


def _id(answer: Any, url: str) -> int:
    try:
        schema_id = int(answer["id"])
    except (KeyError, TypeError, ValueError):
        raise RegistryUnavailable(f"Schema Registry {url} answered without a schema id: "
                                  f"{_message(json.dumps(answer))}") from None
    if not 0 < schema_id < 2**31:  # the wire format holds a Java int; registries count from 1
        raise RegistryUnavailable(f"Schema Registry {url} answered schema id {schema_id}, which the Confluent wire "
                                  f"format cannot carry (1 to 2147483647)")
    return schema_id


async def product_framing(kafka: "ConnectionSettings", topics: "TopicSet") -> Framing:
    """How every client of the product frames and reads values: `PLAIN` without a
    registry (SIZER_SCHEMA_REGISTRY_URL unset); else every JSON Schema of the product
    (`streams.wire.schemas`) registered under its topic's subject (idempotent), with
    the ids read back. Raises RegistryUnavailable (one line) when the registry cannot
    be reached or refuses."""
    from streams.wire import schemas

    if kafka.schema_registry_url is None:
        return PLAIN
    texts, inputs = {}, set()
    for name, (_, role, mode) in schemas.MESSAGES.items():
        texts[role] = (topics.name(role), schemas.render(name))
        if mode == "validation":
            inputs.add(role)
    registry = SchemaRegistry(kafka.schema_registry_url, auth=kafka.schema_registry_auth(),
                              ssl_context=kafka.schema_registry_ssl())
    return await registry.framing(texts, inputs, kafka.schema_registry_inputs == "confluent")
