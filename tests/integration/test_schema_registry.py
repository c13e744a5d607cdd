"""With a Schema Registry (SIZER_SCHEMA_REGISTRY_URL), against a real one: Apicurio
Registry's Confluent-compatible API (deploy/registry/registry.sh, started here) and
the real broker. The product registers its JSON Schemas under <topic>-value, writes
orders and decisions in the Confluent wire format under its subjects' ids, reads
inputs in that format (or plain JSON, by setting), and dead-letters a record framed
with an id that is not its topic's subject's, with the original bytes.

The registry must start: a test that cannot reach one fails, it is never skipped."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.builders import T0
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


def test_outputs_are_framed_with_their_subjects_ids_and_foreign_ids_are_dead_lettered(deployment, workers,
                                                                                       registry_url):
    names = {role: deployment.topics.name(role) for role in ("signals", "orders", "decisions", "fills")}
    on_disk = json.loads((ROOT / "topics" / "schemas" / "v1" / "signal.schema.json").read_text())
    # a producer registered its own copy of the signal schema first: its id is accepted too
    producers = register(registry_url, f"{names['signals']}-value", {**on_disk, "description": "a producer's copy"})
    worker = workers("--preset", "graduated", SIZER_SCHEMA_REGISTRY_URL=registry_url)
    # every schema of the product, registered under the TopicNameStrategy subject, as JSON Schema
    schemas = {role: registered(registry_url, f"{names[role]}-value") for role in names}
    assert json.loads(schemas["signals"]["schema"]) == on_disk
    assert schemas["signals"].get("schemaType", "JSON") == "JSON"
    signal_id, decision_id = schemas["signals"]["id"], schemas["decisions"]["id"]
    assert len({producers, signal_id, decision_id, schemas["orders"]["id"], schemas["fills"]["id"]}) == 5

    foreign = framed(decision_id, signal("x1", T0 + 1))  # the decisions' id on the signals topic
    plain = json.dumps(signal("x2", T0 + 2)).encode()  # not framed
    deployment.publish([("instruments", ETH), ("signals", framed(signal_id, signal("g1", T0))),
                        ("signals", foreign), ("signals", plain), ("signals", framed(producers, signal("g2", T0 + 3)))],
                       keys={1: b"p1", 2: b"p1", 3: b"p1", 4: b"p1"})

    decisions = deployment.wait_for("decisions", 2)
    dead = deployment.wait_for("dlq", 2)
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
    assert "Confluent wire format" in by_value[plain].header("sizer.detail")


def test_plain_json_inputs_by_setting_and_outputs_still_framed(deployment, workers, registry_url):
    workers("--preset", "graduated", SIZER_SCHEMA_REGISTRY_URL=registry_url, SIZER_SCHEMA_REGISTRY_INPUTS="json")
    deployment.publish([("instruments", ETH), ("signals", signal("g1", T0))])
    decision = deployment.wait_for("decisions", 1)[0]
    subject = f"{deployment.topics.name('decisions')}-value"
    assert decision.value[:5] == b"\x00" + struct.pack(">I", registered(registry_url, subject)["id"])
    assert decision.json()["signal_id"] == "g1"


def test_an_unreachable_registry_stops_start_up_in_one_line(deployment):
    env = deployment.env(SIZER_SCHEMA_REGISTRY_URL="http://127.0.0.1:9/apis/ccompat/v6")
    done = subprocess.run([SIZER, "worker", "--preset", "graduated"], env=env, capture_output=True, text=True,
                          cwd=deployment.workdir, timeout=120)
    assert done.returncode == 4
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Schema Registry http://127.0.0.1:9/apis/ccompat/v6 unreachable" in lines[0], \
        done.stderr
