"""The Confluent wire format and the Schema Registry settings, without a registry:
framing checked byte by byte against the format's definition (magic byte 0, the
schema id as 4 bytes big-endian, the JSON), the ids an input topic accepts, and a
registry that refuses or answers what is not its API, served here by a stub."""

from __future__ import annotations

import asyncio
import os

import pytest

from streams.errors import ConfigError, InvalidMessage
from streams.wire.framing import EITHER, PLAIN, Framing, frame, payload, subject, unframe
from streams.worker.settings import load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for variable in list(os.environ):
        if variable.startswith(("SIZER_", "KAFKA_")):
            monkeypatch.delenv(variable)


def test_a_framed_value_is_magic_zero_then_the_id_big_endian_then_the_json():
    assert frame(258, b'{"a":1}') == b'\x00\x00\x00\x01\x02{"a":1}'
    assert frame(2**31 - 1, b"{}") == b"\x00\x7f\xff\xff\xff{}"


@pytest.mark.parametrize("schema_id", [0, -1, 2**31, 2**32 - 1])
def test_an_id_no_registry_gives_is_never_framed(schema_id):
    # Confluent's serializers hold the id in a Java int (signed); registries count from 1
    with pytest.raises(ValueError, match=f"schema id {schema_id}: not a registry's id"):
        frame(schema_id, b"{}")


def test_an_id_read_from_a_frame_is_signed_as_confluents_serializers_write_it():
    assert unframe(b"\x00\xff\xff\xff\xff{}") == (-1, b"{}")
    framing = Framing(accepts={"signals": frozenset({1})}, subjects={"signals": "signals-value"})
    with pytest.raises(InvalidMessage, match="schema id -1 is not registered under subject signals-value"):
        framing.read("signals", b"\x00\xff\xff\xff\xff{}")


def test_unframe_gives_back_the_id_and_the_json():
    assert unframe(b'\x00\x00\x00\x01\x02{"a":1}') == (258, b'{"a":1}')


@pytest.mark.parametrize("value, detail", [
    (b'{"a":1}', "not in the Confluent wire format (magic byte 0 and a 4-byte schema id), first byte 0x7b"),
    (b"", "not in the Confluent wire format (magic byte 0 and a 4-byte schema id), an empty value"),
    (b"\x01\x00\x00\x00\x01{}", "not in the Confluent wire format (magic byte 0 and a 4-byte schema id), "
                                 "first byte 0x01"),
    (b"\x00\x00\x01", "a Confluent wire-format header cut short (3 of 5 bytes)"),
    (b"\x00", "a Confluent wire-format header cut short (1 of 5 bytes)"),
])
def test_a_value_not_in_the_wire_format_is_a_schema_id_error_saying_what_is_wrong(value, detail):
    with pytest.raises(InvalidMessage) as raised:
        unframe(value)
    assert (raised.value.code, raised.value.detail) == ("SCHEMA_ID", f"value: {detail}")


def test_the_subject_is_the_topic_name_strategy():
    assert subject("prod.signals") == "prod.signals-value"


def test_an_input_accepts_only_the_ids_of_its_own_subject():
    framing = Framing(writes={"orders": 7}, accepts={"signals": frozenset({1, 3}), "fills": frozenset({2})},
                      subjects={"signals": "prod.signals-value"})
    assert framing.read("signals", b"\x00\x00\x00\x00\x03{}") == b"{}"
    assert framing.read("signals", None) is None  # a tombstone stays one
    with pytest.raises(InvalidMessage) as raised:
        framing.read("signals", b"\x00\x00\x00\x00\x02{}")  # the fills' schema
    assert (raised.value.code, raised.value.detail) == \
        ("SCHEMA_ID", "value: schema id 2 is not registered under subject prod.signals-value")


def test_every_writer_frames_with_its_topics_id_and_leaves_topics_without_a_schema_plain():
    framing = Framing(writes={"signals": 3, "controls": 300})
    assert framing.written("signals", b"{}") == b"\x00\x00\x00\x00\x03{}"
    assert framing.written("controls", b"{}") == b"\x00\x00\x00\x01\x2c{}"
    assert framing.written("portfolios", b"{}") == b"{}"  # no product schema for the registry topic
    assert PLAIN.written("signals", b"{}") == b"{}"


def test_with_plain_json_inputs_a_value_is_read_as_it_is_and_history_readers_take_both():
    assert Framing(writes={"signals": 3}).read("signals", b"\x00\x00\x00\x00\x03{}") == b"\x00\x00\x00\x00\x03{}"
    assert EITHER.read("signals", b"\x00\x00\x00\x00\x09{}") == EITHER.read("signals", b"{}") == b"{}"
    assert payload(b"\x00\x00") == b"\x00\x00"  # too short to be framed: left to the JSON reader to refuse


def test_the_registry_settings_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("SIZER_SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v6")
    monkeypatch.setenv("SIZER_SCHEMA_REGISTRY_INPUTS", "json")
    kafka = load_settings()
    assert (kafka.schema_registry_url, kafka.schema_registry_inputs) == \
        ("http://127.0.0.1:8081/apis/ccompat/v6", "json")


def test_inputs_format_without_a_registry_stops_start_up_naming_the_field(monkeypatch):
    monkeypatch.setenv("SIZER_SCHEMA_REGISTRY_INPUTS", "json")
    with pytest.raises(ConfigError, match="schema_registry_inputs: set, but schema_registry_url is not"):
        load_settings()


def test_a_registry_url_that_is_not_http_stops_start_up(monkeypatch):
    monkeypatch.setenv("SIZER_SCHEMA_REGISTRY_URL", "registry:8081")
    with pytest.raises(ConfigError, match="schema_registry_url"):
        load_settings()


def test_the_products_readers_read_an_output_framed_or_not():
    from decimal import Decimal

    from streams.kafka.io import Record

    def record(value: bytes) -> Record:
        return Record("decisions", 0, 0, b"p1", value, (), 0)

    text = b'{"signal_id": "s1", "qty": "0.5"}'
    assert record(frame(12, text)).json() == record(text).json() == {"signal_id": "s1", "qty": "0.5"}
    assert Decimal(record(frame(12, text)).json()["qty"]) == Decimal("0.5")


def test_an_unreachable_registry_is_one_error_naming_it():
    import asyncio
    import socket

    from streams.errors import RegistryUnavailable, exit_code
    from streams.kafka.schema_registry import SchemaRegistry

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"http://127.0.0.1:{port}/apis/ccompat/v6"
    with pytest.raises(RegistryUnavailable) as raised:
        asyncio.run(SchemaRegistry(url, timeout_s=5).register("signals", "{}"))
    assert str(raised.value).startswith(f"Schema Registry {url} unreachable: ")
    assert "\n" not in str(raised.value) and exit_code(raised.value) == 4


@pytest.mark.parametrize("status, body, said", [
    (500, '{"error_code": 50001, "message": "Error in the backend\\n data store"}',
     "refused POST /subjects/signals-value/versions: 500 Error in the backend data store"),
    (403, '{"error_code": 40301, "message": "User is denied operation Write on Subject"}',
     "refused POST /subjects/signals-value/versions: 403 User is denied operation Write on Subject"),
    (409, '{"error_code": 409, "message": "Schema being registered is incompatible with an earlier schema"}',
     "refused POST /subjects/signals-value/versions: 409 Schema being registered is incompatible with an earlier "
     "schema (the product's schema is incompatible with what the subject holds under its compatibility rule"),
    (200, "<html>Apicurio Registry</html>",
     "POST /subjects/signals-value/versions answered 200 with what is not JSON (is the URL the base of "
     "Confluent's API?): <html>Apicurio Registry</html>"),
    (200, '{"version": 1}', "answered without a schema id: {\"version\": 1}"),
])
def test_a_registry_that_refuses_or_answers_what_is_not_its_api_is_one_error_naming_it(status, body, said):
    import asyncio

    from aiohttp import web

    from streams.errors import RegistryUnavailable, exit_code
    from streams.kafka.schema_registry import SchemaRegistry

    async def scenario() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", lambda request: web.Response(status=status, text=body))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            await SchemaRegistry(f"http://127.0.0.1:{port}").register("signals", "{}")
        finally:
            await runner.cleanup()

    with pytest.raises(RegistryUnavailable) as raised:
        asyncio.run(scenario())
    assert said in str(raised.value) and "\n" not in str(raised.value), str(raised.value)
    assert exit_code(raised.value) == 4


def test_the_instrument_book_every_worker_keeps_reads_framed_records_by_the_same_rule():
    from streams.wire.instruments import InstrumentBook

    eth = (b'{"symbol": "ETH-USD", "legs": [{"venue_symbol": "ETHUSDT", "side": "buy", "qty_step": "0.001", '
           b'"min_qty": "0.001", "max_qty": null, "min_notional": "5"}]}')
    book = InstrumentBook(Framing(writes={"instruments": 4}, accepts={"instruments": frozenset({4})}))
    assert book.apply(b"ETH-USD", eth, 0) is False  # plain JSON: the agent dead-letters it SCHEMA_ID
    assert book.apply(b"ETH-USD", frame(9, eth), 1) is False  # another subject's id
    assert book.apply(b"ETH-USD", frame(4, eth), 2) is True
    assert book.in_force["ETH-USD"] == (2, frame(4, eth))  # re-published as written, frame and all
    assert book.apply(b"ETH-USD", None, 3) is True and "ETH-USD" not in book.instruments  # a tombstone
    history = InstrumentBook(EITHER)  # the audit's
    assert history.apply(b"ETH-USD", eth, 0) and history.apply(b"ETH-USD", frame(9, eth), 1)


class StubRegistry:
    """A registry of Confluent's API in this process: one id per subject, numbered in
    the order registered, one version each; every request's Authorization header kept."""

    def __init__(self, answer_id: int | None = None) -> None:
        self.ids: dict[str, int] = {}
        self.authorizations: list[str | None] = []
        self.answer_id = answer_id

    async def serve(self, scenario, ssl_context=None):
        from aiohttp import web

        async def versions(request):
            self.authorizations.append(request.headers.get("Authorization"))
            name = request.match_info["subject"]
            if request.method == "POST":
                self.ids.setdefault(name, len(self.ids) + 1 if self.answer_id is None else self.answer_id)
                return web.json_response({"id": self.ids[name]})
            if name not in self.ids:
                return web.json_response({"error_code": 40401, "message": f"Subject '{name}' not found."}, status=404)
            return web.json_response([1])

        async def version(request):
            self.authorizations.append(request.headers.get("Authorization"))
            return web.json_response({"id": self.ids[request.match_info["subject"]], "version": 1})

        async def lookup(request):  # POST /subjects/{subject}: a schema's id, when registered there
            self.authorizations.append(request.headers.get("Authorization"))
            name = request.match_info["subject"]
            if name not in self.ids:
                return web.json_response({"error_code": 40401, "message": f"Subject '{name}' not found."}, status=404)
            return web.json_response({"id": self.ids[name], "subject": name, "version": 1})

        app = web.Application()
        app.router.add_post("/subjects/{subject}", lookup)
        app.router.add_route("*", "/subjects/{subject}/versions", versions)
        app.router.add_get("/subjects/{subject}/versions/{version}", version)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        scheme = "http" if ssl_context is None else "https"
        try:
            return await scenario(f"{scheme}://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/")
        finally:
            await runner.cleanup()


def test_with_plain_json_inputs_the_writers_write_inputs_plain_as_the_worker_reads_them(monkeypatch):
    import asyncio

    from streams.kafka.schema_registry import product_framing
    from streams.kafka.topics import load_topics
    from streams.wire.admission import admit_record

    signal = (b'{"signal_id": "s1", "portfolio_id": "p1", "symbol": "BTC-USD", "side": "buy", "score": "0.5", '
              b'"price": "100", "ts": 1700000000000}')

    async def scenario(url: str):
        monkeypatch.setenv("SIZER_SCHEMA_REGISTRY_URL", url)
        monkeypatch.setenv("SIZER_SCHEMA_REGISTRY_INPUTS", "json")
        kafka = load_settings()
        return await product_framing(kafka, load_topics(kafka.topics_file))

    framing = asyncio.run(StubRegistry().serve(scenario))
    written = framing.written("signals", signal)  # what `sizer publish` writes
    assert written == signal
    assert framing.written("controls", b"{}") == b"{}"  # `sizer control`
    assert admit_record("signals", b"p1", framing.read("signals", written), None, 0).signal_id == "s1"
    assert framing.written("decisions", b"{}")[:1] == b"\x00"  # outputs still framed


@pytest.mark.parametrize("encoding", ["utf-16-be", "utf-16-le", "utf-32-be"])
def test_json_not_in_utf8_is_refused_by_the_worker_as_by_the_readers_of_topic_history(encoding):
    # UTF-16-BE and UTF-32-BE JSON start with a zero byte, the wire format's magic byte:
    # a worker without a registry admitted such a signal while the audit, reading past
    # a "header", could not: the audit's re-derivation then lacked a decided signal
    from streams.history.interleaving import admitted
    from streams.kafka.io import Record
    from streams.wire.admission import admit_record

    text = ('{"signal_id": "s1", "portfolio_id": "p1", "symbol": "BTC-USD", "side": "buy", "score": "0.5", '
            '"price": "100", "ts": 1700000000000}').encode(encoding)
    with pytest.raises(InvalidMessage) as raised:
        PLAIN.read("signals", text) and admit_record("signals", b"p1", PLAIN.read("signals", text), None, 0)
    assert raised.value.code == "INVALID_JSON" and "not UTF-8" in raised.value.detail
    assert admitted("signals", Record("signals", 0, 0, b"p1", text, (), 0)) is None


@pytest.mark.parametrize("answered", [0, 2**31])
def test_a_registry_answering_an_id_the_wire_format_cannot_carry_is_one_error(answered):
    import asyncio

    from streams.errors import RegistryUnavailable
    from streams.kafka.schema_registry import SchemaRegistry

    with pytest.raises(RegistryUnavailable, match=f"answered schema id {answered}, which the Confluent wire format "
                                                  f"cannot carry"):
        asyncio.run(StubRegistry(answer_id=answered).serve(lambda url: SchemaRegistry(url).register("s", "{}")))


def test_registry_credentials_are_sent_as_basic_authentication_and_never_shown(monkeypatch, tmp_path, capsys):
    import asyncio
    import base64

    from streams.kafka.schema_registry import product_framing
    from streams.kafka.topics import load_topics

    secret = tmp_path / "registry-password"
    secret.write_text("s3cret\n")
    registry = StubRegistry()

    async def scenario(url: str):
        monkeypatch.setenv("SIZER_SCHEMA_REGISTRY_URL", url)
        monkeypatch.setenv("SIZER_SCHEMA_REGISTRY_USERNAME", "api-key")
        monkeypatch.setenv("SIZER_SCHEMA_REGISTRY_PASSWORD_FILE", str(secret))
        kafka = load_settings()
        return await product_framing(kafka, load_topics(kafka.topics_file))

    asyncio.run(registry.serve(scenario))
    expected = "Basic " + base64.b64encode(b"api-key:s3cret").decode()
    assert registry.authorizations and set(registry.authorizations) == {expected}


@pytest.mark.parametrize("variables, said", [
    ({"SIZER_SCHEMA_REGISTRY_URL": "https://key:secret@registry.example:8081"},
     "schema_registry_url: no credentials in the URL"),
    ({"SIZER_SCHEMA_REGISTRY_URL": "https://registry.example", "SIZER_SCHEMA_REGISTRY_USERNAME": "key"},
     "schema_registry_username: basic authentication needs both the username and the password"),
    ({"SIZER_SCHEMA_REGISTRY_URL": "https://registry.example", "SIZER_SCHEMA_REGISTRY_PASSWORD": "secret"},
     "schema_registry_username: basic authentication needs both"),
    ({"SIZER_SCHEMA_REGISTRY_USERNAME": "key", "SIZER_SCHEMA_REGISTRY_PASSWORD": "secret"},
     "schema_registry_password: set, but schema_registry_url is not"),
    ({"SIZER_SCHEMA_REGISTRY_URL": "https://registry.example", "SIZER_SCHEMA_REGISTRY_USERNAME": "key",
      "SIZER_SCHEMA_REGISTRY_PASSWORD_FILE": "/nonexistent/registry-password"},
     "schema_registry_password_file: no such file: /nonexistent/registry-password"),
    ({"SIZER_SCHEMA_REGISTRY_URL": "http://registry.example", "SIZER_SCHEMA_REGISTRY_CAFILE": __file__},
     "schema_registry_cafile: set, but schema_registry_url is not https"),
    ({"SIZER_SCHEMA_REGISTRY_URL": "https://registry.example", "SIZER_SCHEMA_REGISTRY_INPUTS": "avro"},
     "schema_registry_inputs"),
])
def test_registry_settings_that_cannot_work_stop_start_up_in_one_line_naming_the_field(monkeypatch, variables, said):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    problems = str(raised.value).splitlines()[1:]  # under the heading, one line a problem
    assert len(problems) == 1 and said in problems[0], str(raised.value)
    assert "secret" not in str(raised.value)  # neither the password nor the URL holding one


def test_a_registry_on_https_is_verified_against_the_ca_given(monkeypatch, tmp_path):
    import asyncio
    import ssl
    import subprocess

    from streams.errors import RegistryUnavailable
    from streams.kafka.schema_registry import product_framing
    from streams.kafka.topics import load_topics

    cert, key = tmp_path / "registry.crt", tmp_path / "registry.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=registry",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)

    def framing_with(cafile):
        async def scenario(url: str):
            monkeypatch.setenv("SIZER_SCHEMA_REGISTRY_URL", url)
            if cafile is not None:
                monkeypatch.setenv("SIZER_SCHEMA_REGISTRY_CAFILE", str(cafile))
            kafka = load_settings()
            return await product_framing(kafka, load_topics(kafka.topics_file))
        return asyncio.run(StubRegistry().serve(scenario, ssl_context=server))

    with pytest.raises(RegistryUnavailable, match="unreachable: .*[Cc]ertificate"):
        framing_with(None)  # a private CA, not among the system's
    assert framing_with(cert).writes["decisions"] > 0


class Lookups:
    """A registry's answers to `GET /schemas/ids/{id}/versions`, counted, on a clock the test moves."""

    def __init__(self, subjects: dict[int, set[str]], down: bool = False) -> None:
        self.subjects = subjects
        self.down = down
        self.asked: list[int] = []
        self.now = 1000.0

    async def subjects_of(self, schema_id: int) -> frozenset[str]:
        from streams.errors import RegistryUnavailable

        self.asked.append(schema_id)
        await asyncio.sleep(0)
        if self.down:
            raise RegistryUnavailable("Schema Registry http://registry:8081 unreachable: ClientConnectorError: refused")
        return frozenset(self.subjects.get(schema_id, set()))

    def framing(self) -> Framing:
        from streams.wire.framing import SchemaIds

        return Framing(accepts={"signals": frozenset({1}), "instruments": frozenset({4})},
                       subjects={"signals": "prod.signals-value", "instruments": "prod.instruments-value"},
                       learned=SchemaIds(self.subjects_of, clock=lambda: self.now))


def refusal(framing: Framing, role: str, value: bytes) -> tuple[str, str]:
    with pytest.raises(InvalidMessage) as raised:
        asyncio.run(framing.admit(role, value))
    return raised.value.code, raised.value.detail


def test_a_version_registered_after_start_up_is_accepted_once_the_registry_says_it_is_the_subjects():
    lookups = Lookups({7: {"prod.signals-value"}, 8: {"prod.decisions-value"}})
    framing = lookups.framing()
    assert asyncio.run(framing.admit("signals", frame(7, b"{}"))) == b"{}"
    assert asyncio.run(framing.admit("signals", frame(7, b"[]"))) == b"[]"
    assert framing.read("signals", frame(7, b"{}")) == b"{}"  # learned: the view's read takes it too
    assert asyncio.run(framing.admit("signals", frame(1, b"{}"))) == b"{}"  # known at start-up: not asked
    assert lookups.asked == [7]  # once
    # an id of another subject, and one the registry does not hold: SCHEMA_ID as before
    assert refusal(framing, "signals", frame(8, b"{}")) == \
        ("SCHEMA_ID", "value: schema id 8 is not registered under subject prod.signals-value")
    assert refusal(framing, "signals", frame(99, b"{}"))[0] == "SCHEMA_ID"
    # an id is accepted for its own subject only
    assert refusal(framing, "instruments", frame(7, b"{}"))[0] == "SCHEMA_ID"
    assert lookups.asked == [7, 8, 99]


def test_a_refused_id_is_asked_again_only_after_the_recheck_interval():
    from streams.wire.framing import RECHECK_S

    lookups = Lookups({})
    framing = lookups.framing()
    for _ in range(50):
        assert refusal(framing, "signals", frame(9, b"{}"))[0] == "SCHEMA_ID"
    assert lookups.asked == [9]
    lookups.subjects[9] = {"prod.signals-value"}  # registered under it since
    lookups.now += RECHECK_S - 0.1
    assert refusal(framing, "signals", frame(9, b"{}"))[0] == "SCHEMA_ID"
    lookups.now += 0.2
    assert asyncio.run(framing.admit("signals", frame(9, b"{}"))) == b"{}"
    assert lookups.asked == [9, 9]


def test_a_flood_of_bogus_ids_sends_a_bounded_number_of_lookups():
    from streams.wire.framing import LOOKUPS_PER_RECHECK, RECHECK_S

    lookups = Lookups({5000: {"prod.signals-value"}})
    framing = lookups.framing()
    refused = [refusal(framing, "signals", frame(100 + n, b"{}")) for n in range(500)]
    assert len(lookups.asked) == LOOKUPS_PER_RECHECK
    assert {code for code, _ in refused} == {"SCHEMA_ID"}
    assert refused[-1][1] == (f"value: schema id 599 is not one registered under subject prod.signals-value at "
                              f"start-up, and was not looked up: {LOOKUPS_PER_RECHECK} unknown ids were in the last "
                              f"{RECHECK_S:g} s")
    lookups.now += RECHECK_S
    assert asyncio.run(framing.admit("signals", frame(5000, b"{}"))) == b"{}"  # a new window
    assert len(lookups.asked) == LOOKUPS_PER_RECHECK + 1


def test_concurrent_reads_of_one_unknown_id_send_one_lookup():
    lookups = Lookups({7: {"prod.signals-value"}})
    framing = lookups.framing()

    async def scenario():
        return await asyncio.gather(*(framing.admit("signals", frame(7, b"{}")) for _ in range(10)))

    assert asyncio.run(scenario()) == [b"{}"] * 10
    assert lookups.asked == [7]


def test_an_unreachable_registry_is_a_dead_letter_naming_it_and_is_not_asked_again_for_a_while():
    from streams.wire.framing import RECHECK_S

    lookups = Lookups({7: {"prod.signals-value"}}, down=True)
    framing = lookups.framing()
    code, detail = refusal(framing, "signals", frame(7, b"{}"))
    assert code == "SCHEMA_REGISTRY_UNAVAILABLE"
    assert detail == ("value: schema id 7 is not one registered under subject prod.signals-value at start-up, and "
                      "the registry could not be asked: Schema Registry http://registry:8081 unreachable: "
                      "ClientConnectorError: refused")
    assert refusal(framing, "signals", frame(8, b"{}"))[0] == "SCHEMA_REGISTRY_UNAVAILABLE"  # not asked
    assert asyncio.run(framing.admit("signals", frame(1, b"{}"))) == b"{}"  # the ids known still read
    assert lookups.asked == [7]
    lookups.down, lookups.now = False, lookups.now + RECHECK_S
    assert asyncio.run(framing.admit("signals", frame(7, b"{}"))) == b"{}"
    assert lookups.asked == [7, 7]


def test_values_refused_by_their_frame_are_never_looked_up():
    lookups = Lookups({})
    framing = lookups.framing()
    for value in (b'{"a": 1}', b"\x00\x00\x01", b"\x01\x00\x00\x00\x07{}"):
        assert refusal(framing, "signals", value)[0] == "SCHEMA_ID"
    assert asyncio.run(framing.admit("signals", None)) is None
    assert lookups.asked == []


def serve(routes, scenario):
    """`scenario(url)` against a registry of `routes` ({path pattern: handler}) in this process."""
    from aiohttp import web

    async def run():
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_route("*", path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            return await scenario(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}")
        finally:
            await runner.cleanup()

    return asyncio.run(run())


def test_the_subjects_of_an_id_are_read_from_the_registry_and_an_id_it_does_not_hold_has_none():
    from aiohttp import web

    from streams.errors import RegistryUnavailable
    from streams.kafka.schema_registry import SchemaRegistry

    async def versions(request):
        schema_id = int(request.match_info["id"])
        if schema_id == 7:
            return web.json_response([{"subject": "prod.signals-value", "version": 2},
                                      {"subject": "other-value", "version": 1}])
        if schema_id == 8:  # a registry without this endpoint: a 404 that is not "no such schema"
            return web.json_response({"error_code": 404, "message": "HTTP 404 Not Found"}, status=404)
        return web.json_response({"error_code": 40403, "message": "Schema not found"}, status=404)

    async def scenario(url):
        registry = SchemaRegistry(url)
        found = await registry.subjects_of(7), await registry.subjects_of(9)
        with pytest.raises(RegistryUnavailable, match="refused GET /schemas/ids/8/versions: 404 HTTP 404 Not Found"):
            await registry.subjects_of(8)
        return found

    assert serve({"/schemas/ids/{id}/versions": versions}, scenario) == \
        (frozenset({"prod.signals-value", "other-value"}), frozenset())


def test_start_up_asks_the_registry_at_once_and_registers_only_what_it_does_not_hold():
    from aiohttp import web

    from streams.kafka.schema_registry import SchemaRegistry

    held = {"s-value": {10: 1, 11: 2}, "o-value": {30: 1}}  # subject -> {id: version}; f-value is new
    flight = {"now": 0, "most": 0}
    sent = []

    async def answer(request, body, status=200):
        sent.append((request.method, request.path))
        flight["now"] += 1
        flight["most"] = max(flight["most"], flight["now"])
        await asyncio.sleep(0.05)
        flight["now"] -= 1
        return web.json_response(body, status=status)

    def missing(name):
        return {"error_code": 40401, "message": f"Subject '{name}' not found."}

    async def lookup(request):
        name = request.match_info["subject"]
        if name not in held:
            return await answer(request, missing(name), 404)
        return await answer(request, {"id": min(held[name]), "subject": name, "version": 1})

    async def versions(request):
        name = request.match_info["subject"]
        if request.method == "POST":
            held[name] = {20: 1}
            return await answer(request, {"id": 20})
        if name not in held:
            return await answer(request, missing(name), 404)
        return await answer(request, sorted(held[name].values()))

    async def version(request):
        name, number = request.match_info["subject"], int(request.match_info["version"])
        return await answer(request, {"id": {v: i for i, v in held[name].items()}[number], "version": number})

    schemas = {"signals": ("s", "{}"), "fills": ("f", "{}"), "orders": ("o", "{}")}
    framing = serve({"/subjects/{subject}": lookup, "/subjects/{subject}/versions": versions,
                     "/subjects/{subject}/versions/{version}": version},
                    lambda url: SchemaRegistry(url).framing(schemas, {"signals", "fills"}, True))
    assert framing.writes == {"signals": 10, "fills": 20, "orders": 30}
    assert framing.accepts == {"signals": frozenset({10, 11}), "fills": frozenset({20})}
    assert sorted(sent) == sorted([("POST", "/subjects/s-value"), ("POST", "/subjects/f-value"),
                                   ("POST", "/subjects/o-value"), ("GET", "/subjects/s-value/versions"),
                                   ("GET", "/subjects/f-value/versions"), ("GET", "/subjects/s-value/versions/1"),
                                   ("GET", "/subjects/s-value/versions/2"), ("POST", "/subjects/f-value/versions")])
    assert sent[-1] == ("POST", "/subjects/f-value/versions")  # only the new one is registered, after the lookups
    assert flight["most"] >= 5  # the lookups at once: one after the other, it was 1


def test_each_registry_request_times_out_after_the_setting(monkeypatch):
    import time

    from aiohttp import web

    from streams.errors import RegistryUnavailable
    from streams.kafka.schema_registry import product_framing
    from streams.kafka.topics import load_topics

    async def slow(request):
        await asyncio.sleep(5)
        return web.json_response({"id": 1})

    async def scenario(url):
        monkeypatch.setenv("SIZER_SCHEMA_REGISTRY_URL", url)
        monkeypatch.setenv("SIZER_SCHEMA_REGISTRY_TIMEOUT_S", "0.3")
        kafka = load_settings()
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable, match=r"unreachable: no answer to \S+ /subjects/\S+-value\S* within 0.3 s "
                                                        r"\(SIZER_SCHEMA_REGISTRY_TIMEOUT_S\)"):
            await product_framing(kafka, load_topics(kafka.topics_file))
        return time.monotonic() - started

    assert serve({"/{tail:.*}": slow}, scenario) < 3


@pytest.mark.parametrize("variables, said", [
    ({"SIZER_SCHEMA_REGISTRY_URL": "http://registry:8081", "SIZER_SCHEMA_REGISTRY_TIMEOUT_S": "0"},
     "schema_registry_timeout_s: Input should be greater than 0"),
    ({"SIZER_SCHEMA_REGISTRY_URL": "http://registry:8081", "SIZER_SCHEMA_REGISTRY_TIMEOUT_S": "ten"},
     "schema_registry_timeout_s: Input should be a valid number"),
    ({"SIZER_SCHEMA_REGISTRY_URL": "http://registry:8081", "SIZER_SCHEMA_REGISTRY_TIMEOUT_S": "60"},
     "schema_registry_timeout_s: must be below liveness_timeout_s (60 s), not 60"),
    ({"SIZER_SCHEMA_REGISTRY_TIMEOUT_S": "5"}, "schema_registry_timeout_s: set, but schema_registry_url is not"),
])
def test_a_registry_timeout_that_cannot_work_stops_start_up_naming_the_field_and_the_rule(monkeypatch, variables,
                                                                                          said):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    problems = str(raised.value).splitlines()[1:]
    assert len(problems) == 1 and said in problems[0], str(raised.value)


def test_every_workers_instruments_view_admits_a_version_registered_since_start_up_as_the_agent_does():
    from types import SimpleNamespace

    from aiokafka import TopicPartition

    from streams.wire.framing import SchemaIds
    from streams.worker.instruments import InstrumentView
    from streams.worker.settings import WorkerSettings

    eth = (b'{"symbol": "ETH-USD", "legs": [{"venue_symbol": "ETHUSDT", "side": "buy", "qty_step": "0.001", '
           b'"min_qty": "0.001", "max_qty": null, "min_notional": "5"}]}')
    lookups = Lookups({6: {"prod.instruments-value"}, 9: {"prod.signals-value"}})
    tp = TopicPartition("prod.instruments", 0)
    records = [SimpleNamespace(key=b"ETH-USD", value=frame(9, eth.replace(b'"5"', b'"6"')), offset=0, timestamp=None,
                               headers=()),
               SimpleNamespace(key=b"ETH-USD", value=frame(6, eth), offset=1, timestamp=None, headers=())]

    async def scenario():
        view = InstrumentView(WorkerSettings().for_role("test"), "prod.instruments", 1,
                              framing=Framing(accepts={"instruments": frozenset({4})},
                                              subjects={"instruments": "prod.instruments-value"},
                                              learned=SchemaIds(lookups.subjects_of)))

        class Consumer:
            async def position(self, partition):
                return 2 if view.caught_up.is_set() else 0

            async def getmany(self, timeout_ms):
                view._stopped.set()  # one fetch, then the loop ends
                return {tp: records}

        view._consumer, view._targets = Consumer(), {tp: 2}
        await view._follow()
        return view

    view = asyncio.run(scenario())
    assert view.in_force("ETH-USD") == (1, frame(6, eth))  # id 9 is the signals': skipped
    assert sorted(lookups.asked) == [6, 9]


def test_the_audit_names_each_output_framed_with_an_id_not_registered_under_its_subject():
    from streams.history.audit import AuditReport, check_schema_ids, output_schema_subjects
    from streams.kafka.io import Record

    decision = b'{"signal_id": "s1", "order_id": "o1", "outcome": "accepted"}'
    order = b'{"signal_id": "s1", "order_id": "o1"}'
    history = {
        "decisions": [Record("prod.decisions", 0, 0, b"p1", frame(22, decision), (), 0),
                      Record("prod.decisions", 1, 4, b"p2", frame(3, decision.replace(b"s1", b"s2")), (), 0),
                      Record("prod.decisions", 1, 5, b"p2", decision.replace(b"s1", b"s3"), (), 0)],  # plain
        "orders": [Record("prod.orders", 0, 0, b"p1", frame(22, order), (), 0),
                   Record("prod.orders", 0, 1, b"p1", frame(21, order.replace(b"o1", b"o2")), (), 0)],
    }
    lookups = Lookups({22: {"prod.decisions-value"}, 21: {"prod.orders-value"}, 3: {"prod.signals-value"}})
    subjects = asyncio.run(output_schema_subjects(history, lookups))
    assert sorted(lookups.asked) == [3, 21, 22]  # once per id
    report = AuditReport()
    check_schema_ids(history, subjects, report)
    assert report.schema_id_mismatches == [
        {"topic": "prod.decisions", "partition": 1, "offset": 4, "signal_id": "s2", "order_id": "o1", "schema_id": 3,
         "subject": "prod.decisions-value", "registered_under": "prod.signals-value"},
        {"topic": "prod.orders", "partition": 0, "offset": 0, "signal_id": "s1", "order_id": "o1", "schema_id": 22,
         "subject": "prod.orders-value", "registered_under": "prod.decisions-value"}]
    assert not report.ok and "schema id mismatches: 2" in report.summary()
    assert "offset=4 signal_id=s2 order_id=o1 schema_id=3 subject=prod.decisions-value" in report.summary()


def test_an_id_found_stays_known_through_a_long_flood_of_bogus_ids_and_an_outage():
    from streams.wire.framing import KEEP_ANSWERS, LOOKUPS_PER_RECHECK, RECHECK_S

    lookups = Lookups({7: {"prod.signals-value"}})
    framing = lookups.framing()
    assert asyncio.run(framing.admit("signals", frame(7, b"{}"))) == b"{}"

    async def flood():  # spread under the rate limit, past the answers kept
        refused = []
        for bogus in range(100, 100 + KEEP_ANSWERS + LOOKUPS_PER_RECHECK):
            try:
                await framing.admit("signals", frame(bogus, b"{}"))
            except InvalidMessage as exc:
                refused.append(exc.code)
            if bogus % LOOKUPS_PER_RECHECK == 0:
                lookups.now += RECHECK_S
        return refused

    assert set(asyncio.run(flood())) == {"SCHEMA_ID"}
    assert len(lookups.asked) > KEEP_ANSWERS
    lookups.down = True
    assert asyncio.run(framing.admit("signals", frame(7, b"{}"))) == b"{}"  # still known: not asked again
    assert lookups.asked.count(7) == 1


@pytest.mark.parametrize("body, content_type, status", [
    (b"\xff\xfe not text", "application/json", 200),
    (b"<html><body>Bad gateway</body></html>", "text/html", 200),
    (b"<html><body>Bad gateway</body></html>", "text/html", 502),
    (b"[" * 100_000, "application/json", 200),
    (b'{"versions": 3}', "application/json", 200),
    (b"null", "application/json", 200),
    (b"[null]", "application/json", 200),
])
def test_a_lookup_answered_with_garbage_is_the_registry_unavailable_in_one_line(body, content_type, status):
    from aiohttp import web

    from streams.errors import RegistryUnavailable
    from streams.kafka.schema_registry import SchemaRegistry

    async def versions(request):
        return web.Response(body=body, status=status, headers={"Content-Type": content_type})

    async def scenario(url):
        with pytest.raises(RegistryUnavailable) as raised:
            await SchemaRegistry(url).subjects_of(7)
        return str(raised.value)

    said = serve({"/schemas/ids/{id}/versions": versions}, scenario)
    assert "GET /schemas/ids/7/versions" in said and "\n" not in said and len(said) < 400, said


def test_without_a_registry_a_short_liveness_timeout_is_not_refused_for_the_registrys_timeout(monkeypatch):
    monkeypatch.setenv("SIZER_LIVENESS_TIMEOUT_S", "3")  # as tests/integration/test_health.py runs a worker
    assert load_settings().liveness_timeout_s == 3
    monkeypatch.setenv("SIZER_SCHEMA_REGISTRY_URL", "http://registry:8081")
    with pytest.raises(ConfigError, match="schema_registry_timeout_s: must be below liveness_timeout_s"):
        load_settings()


def test_an_id_no_registry_holds_is_refused_without_asking_nor_spending_a_lookup():
    from streams.wire.framing import LOOKUPS_PER_RECHECK

    lookups = Lookups({7: {"prod.signals-value"}})
    framing = lookups.framing()
    for _ in range(LOOKUPS_PER_RECHECK):
        for value in (b"\x00\x00\x00\x00\x00{}", b"\x00\xff\xff\xff\xff{}", b"\x00\x80\x00\x00\x00{}"):  # 0, -1, min
            assert refusal(framing, "signals", value)[0] == "SCHEMA_ID"
    assert lookups.asked == []
    assert asyncio.run(framing.admit("signals", frame(7, b"{}"))) == b"{}"


def test_an_instruments_view_waits_out_a_registry_outage_rather_than_skip_a_record_the_agent_may_admit():
    from types import SimpleNamespace

    from aiokafka import TopicPartition

    from streams.wire.framing import RECHECK_S, SchemaIds
    from streams.worker.instruments import InstrumentView
    from streams.worker.settings import WorkerSettings

    eth = (b'{"symbol": "ETH-USD", "legs": [{"venue_symbol": "ETHUSDT", "side": "buy", "qty_step": "0.001", '
           b'"min_qty": "0.001", "max_qty": null, "min_notional": "5"}]}')
    lookups = Lookups({6: {"prod.instruments-value"}}, down=True)
    tp = TopicPartition("prod.instruments", 0)
    records = [SimpleNamespace(key=b"ETH-USD", value=frame(6, eth), offset=0, timestamp=None, headers=())]

    async def scenario():
        view = InstrumentView(WorkerSettings().for_role("test"), "prod.instruments", 1,
                              framing=Framing(accepts={"instruments": frozenset({4})},
                                              subjects={"instruments": "prod.instruments-value"},
                                              learned=SchemaIds(lookups.subjects_of, clock=lambda: lookups.now)))
        view.registry_retry_s = 0.05
        fetches = []

        class Consumer:
            async def position(self, partition):
                return 1 if fetches else 0

            async def getmany(self, timeout_ms):
                if fetches:
                    view._stopped.set()
                    return {}
                fetches.append(1)
                return {tp: records}

        async def registry_back():  # the outage ends while the view waits
            await asyncio.sleep(0.2)
            lookups.down, lookups.now = False, lookups.now + RECHECK_S

        view._consumer, view._targets = Consumer(), {tp: 1}
        await asyncio.gather(view._follow(), registry_back())
        return view

    view = asyncio.run(scenario())
    assert view.in_force("ETH-USD") == (0, frame(6, eth))  # as the agent, asked after the outage, admits it
    assert lookups.asked[-1] == 6 and len(lookups.asked) >= 2
