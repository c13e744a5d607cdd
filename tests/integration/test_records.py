"""No single record stops the worker or is lost (issue 19), kind by kind, on the
real broker: records with nothing in them, times out of bounds, records too big
to dead-letter, keys that lie, compaction of the compacted topics, and input
topics recreated under the worker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.worker.dead_letters import PREVIEW_BYTES
from tests.builders import T0
from tests.integration.harness import SIZER, decisions_by_signal, eventually
from tests.integration.records import Raw, assert_every_offset_has_one_outcome, digest, send_raw

SKEW_MS = 60_000  # the presets' max_future_skew_s


def instrument(symbol: str, qty_step: str = "0.001") -> bytes:
    return json.dumps({"symbol": symbol, "legs": [{"venue_symbol": symbol.replace("-", ""), "side": "buy",
                                                   "qty_step": qty_step, "min_qty": "0.001", "max_qty": None,
                                                   "min_notional": "5"}]}).encode()


def signal(sid: str, symbol: str = "ETH-USD", ts: object = T0, portfolio: str = "p1") -> bytes:
    return json.dumps({"signal_id": sid, "portfolio_id": portfolio, "symbol": symbol, "side": "buy",
                       "score": "0.9", "price": "2500", "ts": ts}).encode()


def cancel(eid: str, portfolio: str = "p1") -> bytes:
    return json.dumps({"event_id": eid, "portfolio_id": portfolio, "ts": T0 + 1, "type": "order_canceled",
                       "order_id": "o-none"}).encode()


def letters_by_offset(deployment, role: str) -> dict[tuple[int, int], object]:
    name = deployment.topics.name(role)
    return {(int(r.header("sizer.source.partition")), int(r.header("sizer.source.offset"))): r
            for r in deployment.read("dlq") if r.header("sizer.source.topic") == name}


def test_every_kind_of_bad_record_is_dead_lettered_or_applied_and_the_worker_keeps_running(deployment, workers):
    worker = workers("--preset", "conviction")
    huge = b'{"signal_id": "big", "pad": "' + b"x" * 1_009_973 + b'"}'
    assert len(huge) == 1_010_004
    records = [
        Raw("instruments", b"ETH-USD", instrument("ETH-USD")),
        Raw("instruments", b"BTC-USD", instrument("BTC-USD")),
        # kind 4: an instrument keyed BTC-USD that says ETH-USD, with a step the view must never use
        Raw("instruments", b"BTC-USD", instrument("ETH-USD", qty_step="1")),
        # (a null key never reaches the compacted topic: the broker refuses it)
        Raw("instruments", b"\xff\xfe", None),  # kind 1: a tombstone naming no symbol
        Raw("instruments", b"GONE-USD", instrument("GONE-USD")),
        Raw("instruments", b"GONE-USD", None),  # a keyed tombstone: GONE-USD deleted
        Raw("instruments", b"BIG", huge),  # kind 3: too big to dead-letter as is
        Raw("signals", b"p1", None),  # kind 1: tombstones
        Raw("fills", b"p1", None),
        Raw("signals", None, signal("nullkey")),  # kind 4: null keys
        Raw("fills", None, cancel("f-nullkey")),
        Raw("signals", b"p1", signal("micro", ts=T0 * 1000)),  # kind 2: microseconds as ms
        Raw("signals", b"p1", signal("year0", ts="0001-01-01T00:00:00+01:00")),
        Raw("signals", b"p1", signal("y10k", ts="10000-01-01T00:00:00Z")),
        Raw("signals", b"p1", signal("overflow", ts=2**64)),
        Raw("signals", b"p1", signal("future", ts=T0), timestamp_ms=T0 - 3_600_000),  # FUTURE_TIMESTAMP
        Raw("signals", b"p1", huge),  # kind 3
        Raw("signals", b"p1", b""),
        Raw("signals", b"p1", b"\xff\xfe\xfd"),
        Raw("signals", b"\xff\xfe", signal("badkey")),
        Raw("signals", b"p1", signal("ok-1"), headers=(("h", b"\x00\xff"), ("sizer.reason", b"forged"))),
        Raw("signals", b"p1", signal("gone", symbol="GONE-USD", ts=T0 + 1)),
        Raw("fills", b"p1", cancel("f-ok")),
    ]
    sent = send_raw(deployment, records)
    assert all(not isinstance(result, Exception) for _, result in sent), [(i, repr(r)) for i, (_, r) in enumerate(sent) if isinstance(r, Exception)]
    deployment.wait_for("decisions", 2)
    deployment.wait_consumed("signals")
    deployment.wait_consumed("fills")
    deployment.publish([("signals", json.loads(signal("probe", symbol="BTC-USD", ts=T0 + 2)))])
    decisions = decisions_by_signal(deployment.wait_for("decisions", 3))
    assert worker.alive(), worker.log()[-3000:]

    assert sorted(decisions) == ["gone", "ok-1", "probe"]
    assert decisions["gone"][0]["reason"] == "UNKNOWN_INSTRUMENT"  # the keyed tombstone deleted it
    # The BTC-USD record that said ETH-USD was dead-lettered and never applied: ETH-USD
    # is still sized with its own step (0.001), BTC-USD with its first record.
    assert decisions["ok-1"][0]["outcome"] == "accepted" and decisions["ok-1"][0]["qty"] != "0"
    # and BTC-USD's own record was published again after the lie, so compaction keeps it
    copy = next(r for r in deployment.read("instruments") if r.header("sizer.restores") == "2")
    assert (copy.key, copy.value) == (b"BTC-USD", instrument("BTC-USD"))
    assert decisions["probe"][0]["trace"]["input"]["instrument_offset"] == copy.offset

    signals = {r.offset: r for r in deployment.read("signals") if r.partition == sent[7][1].partition}
    dead = letters_by_offset(deployment, "signals")
    reasons = {}
    for letter in dead.values():
        try:
            reasons[json.loads(letter.value)["signal_id"]] = letter.header("sizer.reason")
        except (TypeError, ValueError, KeyError):
            pass
    assert reasons["nullkey"] == reasons["badkey"] == "KEY_MISMATCH"
    assert reasons["micro"] == reasons["year0"] == reasons["y10k"] == reasons["overflow"] == "INVALID_FIELD"
    assert reasons["future"] == "FUTURE_TIMESTAMP"
    tombstone = dead[(sent[7][1].partition, sent[7][1].offset)]
    assert (tombstone.header("sizer.reason"), tombstone.key, tombstone.value) == ("NULL_VALUE", b"p1", None)
    future = next(r for r in dead.values() if r.header("sizer.reason") == "FUTURE_TIMESTAMP")
    assert future.header("sizer.source.timestamp") == str(T0 - 3_600_000)
    big = dead[(sent[16][1].partition, sent[16][1].offset)]
    assert big.value == huge[:PREVIEW_BYTES] and big.header("sizer.value.original") == digest(huge)
    assert big.header("sizer.reason") == "MISSING_FIELD" and "1010004 bytes" in big.header("sizer.truncated")
    assert signals[sent[16][1].offset].value == huge
    # instruments are checked by their own agent, beside the signals: its dead letters
    # commit with its own transaction, not with the decisions read above
    eventually(lambda: (0, 6) in letters_by_offset(deployment, "instruments"), what="the instrument's dead letter")
    big_instrument = letters_by_offset(deployment, "instruments")[(0, 6)]
    assert big_instrument.header("sizer.value.original") == digest(huge)
    fills_dead = letters_by_offset(deployment, "fills")
    assert sorted(r.header("sizer.reason") for r in fills_dead.values()) == ["KEY_MISMATCH", "NULL_VALUE"]

    counts = assert_every_offset_has_one_outcome(deployment, SKEW_MS)
    assert counts["decided"] == 3
    code, report, stderr = deployment.audit()
    assert (code, report["verified"], report["mismatches"], report["inputs_unaccounted"]) == (0, 3, [], []), \
        (report, stderr)
    # every dead letter fitted: none was refused and sent as a summary
    assert "refused" not in worker.log()


def _alter(deployment, configs: dict[str, dict[str, str]]) -> None:
    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=deployment.bootstrap)
        await admin.start()
        try:
            # AlterConfigs replaces a topic's whole set: the spec's own configs go with it
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, deployment.topics.name(role),
                                                      {**deployment.topics[role].configs, **values})
                                       for role, values in configs.items()])
        finally:
            await admin.close()

    asyncio.run(run())


FAST_COMPACTION = {"segment.ms": "100", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "100",
                   "min.compaction.lag.ms": "0"}


def test_compaction_keeps_a_valid_instrument_and_lost_configs_are_unverifiable(deployment, workers):
    # cleanup.policy and retention.ms stay as the spec says; only how soon the cleaner runs changes
    _alter(deployment, {"instruments": FAST_COMPACTION, "config": FAST_COMPACTION})
    worker = workers("--preset", "conviction")
    sent = send_raw(deployment, [Raw("instruments", b"ETH-USD", instrument("ETH-USD")),
                                 Raw("signals", b"p1", signal("s1"))])
    deployment.wait_for("decisions", 1)
    # an invalid update of the same symbol: dead-lettered, and the valid record published again after it
    send_raw(deployment, [Raw("instruments", b"ETH-USD", instrument("ETH-USD", qty_step="0"))])
    # read once per look: the cleaner, made fast here, may drop the superseded records
    # between two reads, so the copy is taken from the read that found it
    copies: list = []

    def restored() -> bool:
        copies[:] = [r for r in deployment.read("instruments") if r.header("sizer.restores") is not None]
        return bool(copies)

    eventually(restored, what="the valid record re-published")
    copy = copies[-1]
    assert (copy.offset, copy.key, copy.value, copy.header("sizer.restores")) == (
        2, b"ETH-USD", instrument("ETH-USD"), "1")
    # a forged record under the worker's config hash: the only valid one must be kept by nobody but the worker
    config_hash = decisions_by_signal(deployment.read("decisions"))["s1"][0]["config_hash"]
    send_raw(deployment, [Raw("config", config_hash.encode(), b"{}")])
    worker.stop()

    # roll the segments (a record after segment.ms) until the cleaner has run on both topics
    def compacted() -> bool:
        time.sleep(0.3)
        send_raw(deployment, [Raw("instruments", b"ROLL", instrument("ROLL")), Raw("config", b"roll", b"{}")])
        eth = [r for r in deployment.read("instruments") if r.key == b"ETH-USD"]
        configs = [r for r in deployment.read("config") if r.key == config_hash.encode()]
        return len(eth) == 1 and len(configs) == 1

    eventually(compacted, timeout_s=120, what="log compaction of instruments and sizer-config")
    assert [r.value for r in deployment.read("instruments") if r.key == b"ETH-USD"] == [instrument("ETH-USD")]
    # the config record is gone: the decision cannot be re-derived, and is not called a mismatch
    code, report, _ = deployment.audit()
    assert (code, report["mismatches"], len(report["unverifiable"])) == (1, [], 1), report

    # a restarted worker still knows ETH-USD, and puts its configuration back on the topic
    worker = workers("--preset", "conviction")
    deployment.publish([("signals", json.loads(signal("s2", ts=T0 + 1)))])
    decisions = decisions_by_signal(deployment.wait_for("decisions", 2))
    assert decisions["s2"][0]["outcome"] == "accepted", decisions["s2"]
    assert decisions["s2"][0]["trace"]["input"]["instrument_offset"] == copy.offset
    code, report, _ = deployment.audit()
    assert (code, report["verified"], report["mismatches"], report["unverifiable"]) == (0, 2, [], []), report
    assert report["instrument_versions_missing"] == 1  # s1's record was compacted; its copy stood in
    assert sent and worker.alive()


def _recreate(deployment, role: str, partitions: int | None = None) -> None:
    spec = deployment.topics[role]

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=deployment.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([spec.name])
            deadline = time.monotonic() + 60
            while True:  # deletion completes asynchronously
                response = await admin.create_topics([NewTopic(spec.name, partitions or spec.partitions, 1,
                                                               topic_configs=spec.configs)])
                code = response.topic_errors[0][1]
                if code == 0:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{spec.name} not recreated: error {code}")
                await asyncio.sleep(0.5)
        finally:
            await admin.close()

    asyncio.run(run())


def _three_signals_decided_then_signals_recreated(deployment, workers) -> None:
    """A worker decides three signals and stops; then `signals` is deleted and recreated."""
    worker = workers("--preset", "conviction")
    deployment.publish([("instruments", json.loads(instrument("ETH-USD")))]
                       + [("signals", json.loads(signal(f"s{i}", ts=T0 + i))) for i in range(3)])
    deployment.wait_for("decisions", 3)
    deployment.wait_consumed("signals")
    worker.stop()
    _recreate(deployment, "signals")


def test_an_input_topic_recreated_under_the_worker_stops_it_with_a_message_saying_how_to_reset(deployment, workers):
    _three_signals_decided_then_signals_recreated(deployment, workers)

    applied = subprocess.run([SIZER, "topics", "apply"], env=deployment.env(), capture_output=True, text=True)
    assert applied.returncode == 3, applied
    lines = applied.stderr.strip().splitlines()
    assert len(lines) == 1 and "the topic was deleted and recreated" in lines[0], applied.stderr
    assert f"kafka-consumer-groups.sh --delete --group {deployment.app_id}" in lines[0]
    assert "stored position" in lines[0] and "past the end offset 0" in lines[0]

    refused = subprocess.run([SIZER, "worker", "--preset", "conviction"], env=deployment.env(
        SIZER_DATA_DIR=str(deployment.workdir / "data")), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 3
    assert refused.stderr.strip().splitlines()[-1] == lines[0]


def test_an_input_topic_recreated_and_grown_past_the_stored_positions_is_still_recognised(deployment, workers):
    """The end offset alone cannot tell: the record before each stored position
    must be the one the group processed there (its stored fingerprint)."""
    _three_signals_decided_then_signals_recreated(deployment, workers)
    # the new topic grows past the old positions before anything looks at it
    deployment.publish([("signals", json.loads(signal(f"new{i}", ts=T0 + 100 + i))) for i in range(6)])

    applied = subprocess.run([SIZER, "topics", "apply"], env=deployment.env(), capture_output=True, text=True)
    assert applied.returncode == 3, applied
    line, = applied.stderr.strip().splitlines()
    assert "is not the one this group processed there" in line and "the topic was deleted and recreated" in line
    refused = subprocess.run([SIZER, "worker", "--preset", "conviction"], env=deployment.env(
        SIZER_DATA_DIR=str(deployment.workdir / "data")), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 3
    assert refused.stderr.strip().splitlines()[-1] == line
