"""With a Schema Registry (SIZER_SCHEMA_REGISTRY_URL), against a real one: Apicurio
Registry's Confluent-compatible API (deploy/registry/registry.sh, started here) and
the real broker. The product registers its JSON Schemas under <topic>-value, writes
orders and decisions in the Confluent wire format under its subjects' ids, reads
inputs in that format (or plain JSON, by setting), and dead-letters a record framed
with an id that is not its topic's subject's, cut short or with another magic byte,
with the original bytes. Every writer of inputs the product has (`sizer publish`,
`sizer control`, the publishing the demo uses) frames with its topic's id, and the
product's readers (`sizer tail`, `sizer control status`, `sizer audit`) read what
was framed. A registry that refuses the product's schemas stops start-up in one line.

The registry must start: a test that cannot reach one fails, it is never skipped."""

from __future__ import annotations

import asyncio
import json
import os
import re
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from streams.kafka.io import publish
from streams.wire.schemas import SCHEMA_DIR
from streams.worker.settings import WorkerSettings
from tests.builders import T0, filled
from tests.integration.harness import SIZER

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "registry" / "registry.sh"

ETH = {"symbol": "ETH-USD", "legs": [{"venue_symbol": "ETHUSDT", "side": "buy", "qty_step": "0.001",
                                       "min_qty": "0.001", "max_qty": None, "min_notional": "5"}]}


def signal(sid: str, ts: int) -> dict:
    return {"signal_id": sid, "portfolio_id": "p1", "symbol": "ETH-USD", "side": "buy", "score": "0.9",
            "price": "2500", "ts": ts}


@pytest.fixture(scope="session")
def registry_url(tmp_path_factory) -> str:
    """A real Schema Registry for the session (built from Maven Central on first use)."""
    env = {**os.environ, "REGISTRY_HOME": str(tmp_path_factory.mktemp("registry"))}
    done = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"the Schema Registry did not start:\n{done.stdout}\n{done.stderr}")
    try:
        yield done.stdout.strip()
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True)


def registered(url: str, subject: str) -> dict:
    """The latest version of `subject` as the registry holds it (its own API, not the product's client)."""
    with urllib.request.urlopen(f"{url}/subjects/{subject}/versions/latest", timeout=10) as answer:
        return json.loads(answer.read())


def register(url: str, subject: str, schema: dict) -> int:
    body = json.dumps({"schemaType": "JSON", "schema": json.dumps(schema)}).encode()
    request = urllib.request.Request(f"{url}/subjects/{subject}/versions", data=body, method="POST",
                                     headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(json.loads(answer.read())["id"])


def framed(schema_id: int, value: dict) -> bytes:
    return b"\x00" + struct.pack(">I", schema_id) + json.dumps(value).encode()


def publish_framed(deployment, url: str, entries: list, keys: dict | None = None) -> None:
    """Publish as the product's own publishing does with SIZER_SCHEMA_REGISTRY_URL set
    (`kafka.io.publish`, what the demo uses): data framed under its subject's id."""
    client = WorkerSettings(bootstrap=deployment.bootstrap, schema_registry_url=url).for_role("test")
    asyncio.run(publish(client, deployment.topics, entries, keys))


def sizer(deployment, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([SIZER, *args], env=deployment.env(**env), capture_output=True, text=True, timeout=180,
                          cwd=deployment.workdir)


def id_of(record) -> int:
    assert record.value[0] == 0, record.value
    return struct.unpack(">I", record.value[1:5])[0]


def test_outputs_are_framed_with_their_subjects_ids_and_foreign_ids_are_dead_lettered(deployment, workers,
                                                                                       registry_url):
    names = {role: deployment.topics.name(role) for role in ("signals", "orders", "decisions", "fills",
                                                             "instruments")}
    on_disk = json.loads((SCHEMA_DIR / "signal.schema.json").read_text())
    # a producer registered its own copy of the signal schema first: its id is accepted too
    producers = register(registry_url, f"{names['signals']}-value", {**on_disk, "description": "a producer's copy"})
    worker = workers("--preset", "graduated", SIZER_SCHEMA_REGISTRY_URL=registry_url)
    # every schema of the product, registered under the TopicNameStrategy subject, as JSON Schema
    schemas = {role: registered(registry_url, f"{names[role]}-value") for role in names}
    assert json.loads(schemas["signals"]["schema"]) == on_disk
    assert schemas["signals"].get("schemaType", "JSON") == "JSON"
    signal_id, decision_id = schemas["signals"]["id"], schemas["decisions"]["id"]
    assert len({producers, signal_id, decision_id, schemas["orders"]["id"], schemas["fills"]["id"],
                schemas["instruments"]["id"]}) == 6

    foreign = framed(decision_id, signal("x1", T0 + 1))  # the decisions' id on the signals topic
    plain = json.dumps(signal("x2", T0 + 2)).encode()  # not framed
    cut_short = b"\x00\x00\x00"  # a header that ends after 3 of its 5 bytes
    other_magic = b"\x01" + framed(signal_id, signal("x3", T0 + 4))[1:]
    instrument = framed(schemas["instruments"]["id"], ETH)
    plain_instrument = json.dumps({**ETH, "symbol": "BTC-USD"}).encode()  # the instruments agent reads framed too
    deployment.publish([("instruments", instrument), ("signals", framed(signal_id, signal("g1", T0))),
                        ("signals", foreign), ("signals", plain), ("signals", framed(producers, signal("g2", T0 + 3))),
                        ("signals", cut_short), ("signals", other_magic), ("instruments", plain_instrument)],
                       keys={0: b"ETH-USD", 1: b"p1", 2: b"p1", 3: b"p1", 4: b"p1", 5: b"p1", 6: b"p1", 7: b"BTC-USD"})

    decisions = deployment.wait_for("decisions", 2)
    dead = deployment.wait_for("dlq", 5)
    assert worker.alive()
    assert [(r.value[0], struct.unpack(">I", r.value[1:5])[0], json.loads(r.value[5:])["signal_id"])
            for r in decisions] == [(0, decision_id, "g1"), (0, decision_id, "g2")]
    orders = deployment.read("orders")
    assert [struct.unpack(">I", r.value[1:5])[0] for r in orders] == [schemas["orders"]["id"]] * len(orders)
    by_value = {r.value: r for r in dead}
    assert by_value[foreign].header("sizer.reason") == "SCHEMA_ID"
    assert by_value[foreign].header("sizer.detail") == \
        f"value: schema id {decision_id} is not registered under subject {names['signals']}-value"
    assert by_value[plain].header("sizer.reason") == "SCHEMA_ID"
    assert by_value[plain].header("sizer.detail") == ("value: not in the Confluent wire format (magic byte 0 and a "
                                                       "4-byte schema id), first byte 0x7b")
    assert (by_value[cut_short].header("sizer.reason"), by_value[cut_short].header("sizer.detail")) == \
        ("SCHEMA_ID", "value: a Confluent wire-format header cut short (3 of 5 bytes)")
    assert (by_value[other_magic].header("sizer.reason"), by_value[other_magic].header("sizer.detail")) == \
        ("SCHEMA_ID", "value: not in the Confluent wire format (magic byte 0 and a 4-byte schema id), first byte 0x01")
    assert by_value[plain_instrument].header("sizer.reason") == "SCHEMA_ID"
    assert by_value[plain_instrument].header("sizer.source.topic") == names["instruments"]
    assert sorted(by_value) == sorted([foreign, plain, cut_short, other_magic, plain_instrument])  # original bytes


def test_plain_json_inputs_by_setting_and_outputs_still_framed(deployment, workers, registry_url, tmp_path):
    env = {"SIZER_SCHEMA_REGISTRY_URL": registry_url, "SIZER_SCHEMA_REGISTRY_INPUTS": "json"}
    workers("--preset", "graduated", **env)
    deployment.publish([("instruments", ETH), ("signals", signal("g1", T0))])
    decision = deployment.wait_for("decisions", 1)[0]
    subject = f"{deployment.topics.name('decisions')}-value"
    assert decision.value[:5] == b"\x00" + struct.pack(">I", registered(registry_url, subject)["id"])
    assert decision.json()["signal_id"] == "g1"
    # the product's own writers, under the same settings, write inputs the worker reads
    journal = tmp_path / "plain.jsonl"
    journal.write_text(json.dumps({"topic": "signals", "value": signal("g2", T0)}) + "\n")
    done = sizer(deployment, "publish", "--journal", str(journal), **env)
    assert done.returncode == 0, done.stderr
    halt = sizer(deployment, "control", "halt", "--portfolio", "p1", "--reason", "plain", "--timeout", "90", **env)
    assert halt.returncode == 0, halt.stderr  # exit 1 when the worker dead-lettered it
    assert [d.json()["signal_id"] for d in deployment.wait_for("decisions", 2)] == ["g1", "g2"]
    assert deployment.read("dlq") == []
    assert all(record.value[:1] == b"{" for record in deployment.read("signals") + deployment.read("controls"))


def test_an_unreachable_registry_stops_start_up_in_one_line(deployment):
    env = deployment.env(SIZER_SCHEMA_REGISTRY_URL="http://127.0.0.1:9/apis/ccompat/v6")
    done = subprocess.run([SIZER, "worker", "--preset", "graduated"], env=env, capture_output=True, text=True,
                          cwd=deployment.workdir, timeout=120)
    assert done.returncode == 4
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Schema Registry http://127.0.0.1:9/apis/ccompat/v6 unreachable" in lines[0], \
        done.stderr


def test_every_writer_of_the_product_frames_and_the_worker_admits_it_and_its_readers_read_it(
        deployment, workers, registry_url, tmp_path):
    workers("--preset", "graduated", SIZER_SCHEMA_REGISTRY_URL=registry_url)
    env = {"SIZER_SCHEMA_REGISTRY_URL": registry_url}
    journal = tmp_path / "mine.jsonl"
    journal.write_text("".join(json.dumps({"topic": topic, "value": value}) + "\n" for topic, value in [
        ("signals", signal("s-1", T0)), ("signals", {**signal("s-2", T0), "portfolio_id": "p2"}),
        ("instruments", ETH)]))
    done = sizer(deployment, "publish", "--journal", str(journal), **env)  # sizer publish (console, journal)
    assert done.returncode == 0, done.stderr
    decisions = deployment.wait_for("decisions", 2)
    order_of = {d.json()["portfolio_id"]: d.json() for d in decisions}
    assert {p: d["outcome"] for p, d in order_of.items()} == {"p1": "accepted", "p2": "accepted"}

    halt = sizer(deployment, "control", "halt", "--portfolio", "p1", "--reason", "registry test", "--timeout", "90",
                 **env)  # sizer control: exit 0 only once the worker applied it (1 when it dead-lettered it)
    assert halt.returncode == 0, halt.stderr
    now = int(time.time() * 1000)
    p2 = order_of["p2"]
    publish_framed(deployment, registry_url, [  # the demo's publishing
        ("signals", signal("s-3", now)),
        ("fills", filled("p2", p2["order_id"], "ETH-USD", p2["qty"], "2500", ts=T0 + 1)["value"])])
    decisions = deployment.wait_for("decisions", 3)
    deployment.wait_consumed("fills")
    assert [d.json()["reason"] for d in decisions if d.json()["signal_id"] == "s-3"] == ["HALTED"]
    assert deployment.read("dlq") == []  # nothing a writer of the product wrote was refused

    ids = {role: registered(registry_url, f"{deployment.topics.name(role)}-value")["id"]
           for role in ("signals", "instruments", "controls", "fills", "decisions", "orders")}
    for role in ids:  # every record on every topic, in the wire format under its own subject's id
        assert {id_of(record) for record in deployment.read(role)} == {ids[role]}, role

    tail = sizer(deployment, "tail", "decisions", "--json", **env)
    assert tail.returncode == 0, tail.stderr
    assert sorted(json.loads(line)["value"]["signal_id"] for line in tail.stdout.splitlines()) == ["s-1", "s-2", "s-3"]
    status = sizer(deployment, "control", "status", "--portfolio", "p1", **env)
    assert status.returncode == 0 and json.loads(status.stdout)[0]["halted"] is True, status.stdout + status.stderr
    shown = sizer(deployment, "status", "--portfolio", "p2", "--json", **env)  # the fill, framed, was applied
    assert shown.returncode == 0, shown.stderr
    positions = json.loads(shown.stdout)["portfolios"][0]["positions"]
    assert [(x["symbol"], x["qty"]) for x in positions] == [("ETH-USD", p2["qty"])]
    code, report, _ = deployment.audit()
    assert (code, report["ok"], report["verified"]) == (0, True, 3), report


def test_a_subject_whose_compatibility_rule_refuses_the_schema_stops_every_writer_in_one_line(deployment,
                                                                                              registry_url):
    # The subject holds another schema under FULL compatibility. Confluent's registry answers
    # 409 (its one line is checked against a stub in tests/unit/test_schema_registry.py);
    # Apicurio Registry 2.4.2's JSON compatibility check cannot read a draft 2020-12 schema
    # and answers 500 "could not determine version": refused all the same, in one line.
    subject = f"{deployment.topics.name('controls')}-value"
    register(registry_url, subject, {"type": "object", "properties": {"legacy": {"type": "integer"}},
                                     "required": ["legacy"], "additionalProperties": False})
    request = urllib.request.Request(f"{registry_url}/config/{subject}", method="PUT",
                                     data=json.dumps({"compatibility": "FULL"}).encode(),
                                     headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
    urllib.request.urlopen(request, timeout=10).close()
    env = {"SIZER_SCHEMA_REGISTRY_URL": registry_url}
    for args in (["worker", "--preset", "graduated"], ["control", "halt", "--portfolio", "p1", "--reason", "x"]):
        done = sizer(deployment, *args, **env)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 4 and len(lines) == 1, (args, done.stderr)
        assert lines == [f"sizer: Schema Registry {registry_url} refused POST /subjects/{subject}/versions: 500 "
                         "#: could not determine version"], lines
    assert deployment.read("controls") == []  # nothing written


def test_a_url_that_is_not_the_registrys_api_stops_start_up_in_one_line(deployment, registry_url):
    wrong = registry_url.removesuffix("/apis/ccompat/v6")  # the registry's root: answers 404
    done = sizer(deployment, "worker", "--preset", "graduated", SIZER_SCHEMA_REGISTRY_URL=wrong)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 4 and len(lines) == 1, done.stderr
    # the first of the requests sent at once to fail: a lookup or a read of a subject's versions
    assert re.search(f"Schema Registry {re.escape(wrong)} refused (POST|GET) /subjects/", lines[0]) and \
        ": 404 " in lines[0], lines


def test_a_version_registered_after_start_up_is_admitted_without_a_restart_and_the_audit_checks_output_ids(
        deployment, workers, registry_url):
    names = {role: deployment.topics.name(role) for role in ("signals", "instruments", "decisions")}
    worker = workers("--preset", "graduated", SIZER_SCHEMA_REGISTRY_URL=registry_url)
    # after the worker started: a producer registers a newer compatible version of each
    # input's schema, and another subject gets a schema of its own
    newer = {role: register(registry_url, f"{names[role]}-value",
                            {**json.loads((SCHEMA_DIR / f"{role[:-1]}.schema.json").read_text()),
                             "description": "a producer's newer version"})
             for role in ("signals", "instruments")}
    elsewhere = register(registry_url, f"{deployment.prefix}elsewhere-value",
                         {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                          "description": f"not the sizer's ({deployment.prefix})"})
    foreign = framed(elsewhere, signal("x1", T0 + 1))
    deployment.publish([("instruments", framed(newer["instruments"], ETH)),
                        ("signals", framed(newer["signals"], signal("g1", T0))), ("signals", foreign)],
                       keys={0: b"ETH-USD", 1: b"p1", 2: b"p1"})
    decisions = deployment.wait_for("decisions", 1)
    dead = deployment.wait_for("dlq", 1)
    assert worker.alive()
    assert [(d.json()["signal_id"], d.json()["outcome"]) for d in decisions] == [("g1", "accepted")]
    assert [(r.value, r.header("sizer.reason"), r.header("sizer.detail")) for r in dead] == [
        (foreign, "SCHEMA_ID", f"value: schema id {elsewhere} is not registered under subject {names['signals']}-value")]

    # the decisions' subject moves on: the worker's id is now an older version of it, still its subject's
    register(registry_url, f"{names['decisions']}-value",
             {**json.loads((SCHEMA_DIR / "decision.schema.json").read_text()), "description": "a newer version"})
    env = {"SIZER_SCHEMA_REGISTRY_URL": registry_url}
    done = sizer(deployment, "audit", "--json", **env)
    report = json.loads(done.stdout)
    assert (done.returncode, report["ok"], report["verified"], report["schema_id_mismatches"]) == (0, True, 1, [])
    # a decision framed with the signals' id: the audit names it
    copy = decisions[0]
    deployment.publish([("decisions", b"\x00" + struct.pack(">I", newer["signals"]) + copy.value[5:])],
                       keys={0: copy.key})
    [wrong] = [r for r in deployment.wait_for("decisions", 2) if id_of(r) == newer["signals"]]
    done = sizer(deployment, "audit", "--json", **env)
    report = json.loads(done.stdout)
    assert done.returncode == 1 and [(m["topic"], m["partition"], m["offset"], m["signal_id"], m["schema_id"],
                                      m["subject"]) for m in report["schema_id_mismatches"]] == \
        [(names["decisions"], wrong.partition, wrong.offset, "g1", newer["signals"], f"{names['decisions']}-value")]
