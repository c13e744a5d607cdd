"""The product's one Schema Registry client (Confluent's REST API, as served by
Confluent Schema Registry and by Apicurio Registry's compatibility API): it
registers the product's JSON Schemas and reads back the ids each topic's subject
holds, as the `wire.framing.Framing` every client of the product writes and reads
with (the wire format itself lives there).

Subjects follow the TopicNameStrategy: a topic's values are registered under
`<topic>-value`. The schemas are the product's JSON Schemas
(`streams.wire.schemas`, checked in under topics/schemas/v<N>/)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, Awaitable, Iterable, Mapping

from streams.errors import RegistryUnavailable
from streams.wire.framing import PLAIN, Framing, SchemaIds, subject

if TYPE_CHECKING:
    from streams.kafka.settings import ConnectionSettings
    from streams.kafka.topics import TopicSet

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
# Confluent's error codes for a subject (40401) or schema (40403) the registry does not
# hold; Apicurio's API answers 40401 to a schema a subject does not hold
NOT_FOUND = (40401, 40403)


class SchemaRegistry:
    """A Schema Registry at `url` (the base of Confluent's API, e.g.
    http://registry:8081 or an Apicurio Registry's .../apis/ccompat/v6)."""

    def __init__(self, url: str, timeout_s: float = 10.0, auth: tuple[str, str] | None = None,
                 ssl_context: Any = None) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.auth = auth  # (username, password): HTTP basic authentication
        self.ssl_context = ssl_context  # https: verifies the registry's certificate; None: the system's CAs

    async def _call(self, session: Any, method: str, path: str, body: Any = None, may_be_absent: bool = False
                    ) -> Any:
        """The registry's JSON answer to one request; None, when `may_be_absent`, for a
        404 the registry says is a subject or schema it does not hold (error codes 40401,
        40403). Every other answer of 300 or more raises RegistryUnavailable."""
        import aiohttp

        try:
            async with session.request(method, f"{self.url}{path}", json=body,
                                       headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}) as response:
                # an answer not in UTF-8 is not the API's: read as it is, refused below
                text = await response.text(errors="replace")
                status = response.status
        except TimeoutError:
            raise RegistryUnavailable(f"Schema Registry {self.url} unreachable: no answer to {method} {path} within "
                                      f"{self.timeout_s:g} s (SIZER_SCHEMA_REGISTRY_TIMEOUT_S)") from None
        except aiohttp.ClientError as exc:
            raise RegistryUnavailable(f"Schema Registry {self.url} unreachable: {type(exc).__name__}: {exc}") from None
        if status == 404 and may_be_absent and _error_code(text) in NOT_FOUND:
            return None
        if status >= 300:
            raise RegistryUnavailable(f"Schema Registry {self.url} refused {method} {path}: {status} "
                                      f"{_message(text)}{_why(status, path)}")
        try:
            answer = _json(text)
            if answer is None:  # no answer of Confluent's API is null
                raise ValueError("null")
            return answer
        except ValueError:
            raise RegistryUnavailable(f"Schema Registry {self.url}: {method} {path} answered {status} with what is "
                                      f"not JSON (is the URL the base of Confluent's API?): {_message(text)}") from None

    def _session(self) -> Any:
        import aiohttp

        auth = aiohttp.BasicAuth(*self.auth) if self.auth is not None else None
        connector = aiohttp.TCPConnector(ssl=self.ssl_context) if self.ssl_context is not None else None
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s), auth=auth,
                                     connector=connector)

    async def register(self, topic: str, schema: str, session: Any = None) -> int:
        """Register a JSON Schema under the topic's subject (idempotent); its id.
        `session`: an open aiohttp session to send it on (None: one of its own)."""
        if session is None:
            async with self._session() as session:
                return await self.register(topic, schema, session)
        answer = await self._call(session, "POST", f"/subjects/{subject(topic)}/versions",
                                  {"schemaType": "JSON", "schema": schema})
        return _id(answer, self.url)

    async def lookup(self, topic: str, schema: str, session: Any) -> int | None:
        """The id of a JSON Schema registered under the topic's subject; None when it is
        not (Confluent's `POST /subjects/{subject}`, which writes nothing)."""
        answer = await self._call(session, "POST", f"/subjects/{subject(topic)}",
                                  {"schemaType": "JSON", "schema": schema}, may_be_absent=True)
        return None if answer is None else _id(answer, self.url)

    async def ids(self, topic: str, session: Any = None) -> frozenset[int]:
        """The ids of every version registered under the topic's subject (none when
        there is no such subject), the versions read concurrently."""
        if session is None:
            async with self._session() as session:
                return await self.ids(topic, session)
        versions = await self._call(session, "GET", f"/subjects/{subject(topic)}/versions", may_be_absent=True) or []
        answers = await _all(self._call(session, "GET", f"/subjects/{subject(topic)}/versions/{version}")
                             for version in versions)
        return frozenset(_id(answer, self.url) for answer in answers)

    async def subjects_of(self, schema_id: int) -> frozenset[str]:
        """The subjects `schema_id` is registered under (Confluent's `GET
        /schemas/ids/{id}/versions`); empty when the registry holds no such id (and,
        unasked, for an id below 1, which no registry gives)."""
        if schema_id < 1:
            return frozenset()
        async with self._session() as session:
            versions = await self._call(session, "GET", f"/schemas/ids/{schema_id}/versions", may_be_absent=True) or []
        try:
            return frozenset(str(version["subject"]) for version in versions)
        except (KeyError, TypeError):
            raise RegistryUnavailable(f"Schema Registry {self.url} answered GET /schemas/ids/{schema_id}/versions "
                                      f"without subjects: {_message(json.dumps(versions))}") from None

    async def framing(self, schemas: Mapping[str, tuple[str, str]], inputs: set[str], framed_inputs: bool) -> Framing:
        """Register `schemas` ({role: (topic, JSON Schema text)}) and read back every id
        each input's subject holds: the ids to write each role with, and to accept on
        `inputs` (when `framed_inputs`; else inputs are read as plain JSON).

        Every subject is looked up at once (its schema's id, the ids of its versions:
        two round trips); only a schema not registered yet is registered, one at a
        time (Apicurio Registry 2.4's SQL storage can give two concurrent first
        registrations one content id, and answers 500). An input's id not read here is
        asked of the registry when first seen (`wire.framing.SchemaIds`)."""
        async def held(role: str, topic: str, schema: str) -> list[Any]:
            return await _all([self.lookup(topic, schema, session),
                               self.ids(topic, session) if role in inputs else _none()])

        async with self._session() as session:
            found = dict(zip(schemas, await _all(held(role, topic, schema)
                                                 for role, (topic, schema) in schemas.items())))
            writes = {}
            for role, (topic, schema) in schemas.items():
                schema_id = found[role][0]
                writes[role] = schema_id if schema_id is not None else await self.register(topic, schema, session)
        accepts = {role: found[role][1] | {writes[role]} for role in schemas if role in inputs}
        if not framed_inputs:
            # the worker reads these topics as plain JSON: a writer of the product
            # (`sizer publish`, `sizer control`) writes them so, or the worker would
            # dead-letter all it writes INVALID_JSON
            writes = {role: schema_id for role, schema_id in writes.items() if role not in inputs}
        return Framing(writes, accepts if framed_inputs else None,
                       {role: subject(topic) for role, (topic, _) in schemas.items()},
                       learned=SchemaIds(self.subjects_of) if framed_inputs else None)


async def _none() -> None:
    return None


async def _all(awaitables: Iterable[Awaitable[Any]]) -> list[Any]:
    """Every answer, the requests sent at once; the first failure is raised once the
    others are cancelled (none is left running on a closed session)."""
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _json(text: str) -> Any:
    """`text` as JSON; ValueError for what is not, nested too deep included."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deep") from None


def _message(text: str) -> str:
    """The registry's own message of an error answer, on one line."""
    try:
        answer = _json(text)
        text = str(answer.get("message", text)) if isinstance(answer, dict) else text
    except ValueError:
        pass
    return " ".join(text.split())[:200]


def _error_code(text: str) -> int | None:
    try:
        answer = _json(text)
        return int(answer["error_code"]) if isinstance(answer, dict) else None
    except (ValueError, KeyError, TypeError):
        return None


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


def schema_registry(kafka: "ConnectionSettings") -> SchemaRegistry:
    """The registry of SIZER_SCHEMA_REGISTRY_URL with its timeout, credentials and CA (the URL must be set)."""
    assert kafka.schema_registry_url is not None
    return SchemaRegistry(kafka.schema_registry_url, timeout_s=kafka.schema_registry_timeout_s,
                          auth=kafka.schema_registry_auth(), ssl_context=kafka.schema_registry_ssl())


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
    return await schema_registry(kafka).framing(texts, inputs, kafka.schema_registry_inputs == "confluent")
