"""Bad input goes to the dead-letter topic with its bytes, reason and source,
the worker keeps running, and every input offset has exactly one outcome."""

from __future__ import annotations

import asyncio
import json
import subprocess

from tests.builders import T0
from tests.integration.harness import SIZER

ETH = {"symbol": "ETH-USD", "legs": [{"venue_symbol": "ETHUSDT", "side": "buy", "qty_step": "0.001",
                                       "min_qty": "0.001", "max_qty": None, "min_notional": "5"}]}


def good(sid: str, ts: int) -> dict:
    return {"signal_id": sid, "portfolio_id": "p1", "symbol": "ETH-USD", "side": "buy", "score": "0.9",
            "price": "2500", "ts": ts}


BAD_SIGNALS = {
    "malformed JSON": (b'{"signal_id": "x1", "portfolio_id": ', "INVALID_JSON", "not valid JSON"),
    "wrong type": (json.dumps({**good("x2", T0), "score": {"value": 1}}).encode(), "INVALID_FIELD", "score:"),
    "negative price": (json.dumps({**good("x3", T0), "price": "-2500"}).encode(), "INVALID_FIELD",
                       "price: Input should be greater than 0"),
    "score 1.5": (json.dumps({**good("x4", T0), "score": 1.5}).encode(), "INVALID_FIELD",
                  "score: Input should be less than or equal to 1"),
    "missing field": (json.dumps({k: v for k, v in good("x5", T0).items() if k != "price"}).encode(),
                      "MISSING_FIELD", "price: Field required"),
    "not UTF-8": (b"\xff\xfe\x00garbage", "INVALID_JSON", "not valid JSON"),
    "not an object": (b'["p1", "ETH-USD"]', "NOT_AN_OBJECT", "got list"),
}


def test_invalid_inputs_are_dead_lettered_and_every_offset_has_one_outcome(deployment, workers):
    worker = workers("--preset", "graduated")
    entries = [("instruments", ETH), ("instruments", b'{"symbol": "BAD", "legs": [{"venue_symbol": "B", "side": "buy", "qty_step": "0"}]}')]
    keys: dict[int, bytes | None] = {1: b"BAD"}
    entries.append(("signals", good("g1", T0)))
    for name, (raw, _, _) in BAD_SIGNALS.items():
        keys[len(entries)] = b"p1"  # same partition as the good ones
        entries.append(("signals", raw))
    entries.append(("signals", {**good("k1", T0 + 1), "portfolio_id": "p2"}))
    keys[len(entries) - 1] = b"p1"  # keyed for another portfolio: would land on the wrong partition
    entries.append(("fills", b'{"event_id": "f-bad", "portfolio_id": "p1", "ts": 1, "type": "refund"}'))
    keys[len(entries) - 1] = b"p1"
    # a fill that changes the state (a cancel of an unknown order changes nothing, and
    # so is named in no trace)
    entries.append(("fills", {"event_id": "f-ok", "portfolio_id": "p1", "ts": T0 + 2, "type": "position_closed",
                              "symbol": "ETH-USD", "qty": "0.001", "price": "2500", "realized_pnl": "1"}))
    entries.append(("signals", good("g2", T0 + 3)))
    deployment.publish(entries, keys)

    dead = deployment.wait_for("dlq", len(BAD_SIGNALS) + 3)
    decisions = deployment.wait_for("decisions", 2)
    assert worker.alive()

    # Every signal offset: exactly one decision or exactly one dead letter.
    signals = deployment.read("signals")
    decided = [(r.json()["trace"]["input"]["partition"], r.json()["trace"]["input"]["offset"]) for r in decisions]
    dead_signals = [(int(r.header("sizer.source.partition")), int(r.header("sizer.source.offset")))
                    for r in dead if r.header("sizer.source.topic") == deployment.topics.name("signals")]
    outcomes = sorted(decided + dead_signals)
    assert outcomes == sorted((r.partition, r.offset) for r in signals)
    assert len(set(outcomes)) == len(outcomes)

    # Each dead letter keeps the original bytes and says why and where from.
    by_value = {r.value: r for r in dead}
    for name, (raw, code, detail) in BAD_SIGNALS.items():
        letter = by_value[raw]
        assert letter.header("sizer.reason") == code, name
        assert detail in letter.header("sizer.detail"), name
        assert letter.key == b"p1"
        source = next(r for r in signals if r.value == raw)
        assert int(letter.header("sizer.source.offset")) == source.offset
    mismatch = next(r for r in dead if r.header("sizer.reason") == "KEY_MISMATCH")
    assert json.loads(mismatch.value)["signal_id"] == "k1"
    bad_fill = next(r for r in dead if r.header("sizer.source.topic") == deployment.topics.name("fills"))
    assert bad_fill.header("sizer.detail").startswith("type: Input tag 'refund'")
    bad_instrument = next(r for r in dead if r.header("sizer.source.topic") == deployment.topics.name("instruments"))
    assert bad_instrument.header("sizer.detail") == "legs.0.qty_step: Input should be greater than 0"

    # The valid fill after the bad one was applied before g2 was decided... or after; either
    # way it is not lost: g2's trace or a later signal names it once the fills are consumed.
    deployment.wait_consumed("fills")
    deployment.publish([("signals", good("g3", T0 + 4))])
    last = [r.json() for r in deployment.wait_for("decisions", 3) if r.json()["signal_id"] == "g3"][0]
    ok_fill = next(r for r in deployment.read("fills") if r.value and b"f-ok" in r.value)
    assert last["trace"]["input"]["last_fill_offset"] == ok_fill.offset
    assert sorted(d.json()["signal_id"] for d in deployment.read("decisions")) == ["g1", "g2", "g3"]
    # The audit accounts for every signal offset: decided, or dead-lettered.
    code, report, _ = deployment.audit()
    assert (code, report["verified"], report["signals_without_decision"]) == (0, 3, [])


def test_a_topic_that_differs_from_its_spec_is_an_error_never_used(deployment):
    # Another partition count for an existing topic name: recreate the spec under a new prefix
    # with `signals` made by hand with 2 partitions.
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    prefix = deployment.prefix.replace("t", "m", 1)

    async def make_wrong():
        admin = AIOKafkaAdminClient(bootstrap_servers=deployment.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(f"{prefix}signals", 2, 1),
                                       NewTopic(f"{prefix}fills", 6, 1, topic_configs={"retention.ms": "1000"})])
        finally:
            await admin.close()

    asyncio.run(make_wrong())
    env = deployment.env(SIZER_TOPIC_PREFIX=prefix)
    applied = subprocess.run([SIZER, "topics", "apply"], env=env, capture_output=True, text=True)
    assert applied.returncode == 3
    assert f"{prefix}signals: 2 partitions on the broker, 6 in the spec" in applied.stderr
    assert f"{prefix}fills: retention.ms=1000 on the broker, 7776000000 in the spec" in applied.stderr

    worker = subprocess.run([SIZER, "worker", "--preset", "conviction"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert worker.returncode == 3
    assert "topics differ from topics/topics.toml" in worker.stderr


def test_a_changelog_that_exists_with_another_width_or_policy_stops_the_worker_naming_it(deployment):
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def make_wrong() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=deployment.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([
                NewTopic(f"{deployment.app_id}-windows-changelog", 1, 1, topic_configs={"cleanup.policy": "compact"}),
                NewTopic(f"{deployment.app_id}-streak-changelog", 6, 1, topic_configs={"cleanup.policy": "delete"})])
        finally:
            await admin.close()

    asyncio.run(make_wrong())
    worker = subprocess.run([SIZER, "worker", "--preset", "conviction"], env=deployment.env(), capture_output=True,
                            text=True, timeout=120)
    assert worker.returncode == 3
    assert (f"{deployment.app_id}-windows-changelog: 1 partition on the broker, the worker's tables have 6"
            in worker.stderr)
    assert f"{deployment.app_id}-streak-changelog: cleanup.policy=delete on the broker" in worker.stderr
    assert "Traceback" not in worker.stderr
