"""Tampering with topic history is caught, each kind by name, with a non-zero exit."""

from __future__ import annotations

import asyncio
import json

from aiokafka import AIOKafkaProducer

from streams import demo_session
from streams.kafka.topics import apply, load_topics
from tests.integration.harness import ROOT


def copy_history(deployment, prefix: str, change) -> None:
    """Copy every topic of the deployment into topics under `prefix`, record by record,
    to the same partitions in the same order; `change(role, record)` returns the
    value to write, or None to drop the record."""
    topics = load_topics(ROOT / "topics" / "topics.toml", prefix)
    asyncio.run(apply(deployment.client, topics))

    history = {role: deployment.read(role)
               for role in ("instruments", "config", "signals", "fills", "dlq", "decisions", "orders")}

    async def copy():
        producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for role, records in history.items():
                for record in records:
                    value = change(role, record)
                    if value is not None:
                        await producer.send_and_wait(topics.name(role), value, key=record.key,
                                                     partition=record.partition, headers=list(record.headers))
        finally:
            await producer.stop()

    asyncio.run(copy())


def test_forged_altered_deleted_and_undecided_are_each_reported(deployment, workers):
    workers("--preset", "graduated")
    decisions = [r.json() for r in deployment.run_demo_session()]
    by_id = {d["signal_id"]: d for d in decisions}
    code, report, _ = deployment.audit()
    assert code == 0 and report["ok"]

    forged, altered, deleted = by_id["a-1"], by_id["b-3"], by_id["c-2"]  # c-2: charlie's last decision

    def change(role, record):
        data = record.json() if role in ("decisions", "orders") else None
        if role == "decisions" and data["signal_id"] == forged["signal_id"]:
            return json.dumps({**data, "notional": "250", "qty": "0.005"}).encode()
        if role == "decisions" and data["signal_id"] == deleted["signal_id"]:
            return None
        if role == "orders" and data["signal_id"] == altered["signal_id"]:
            return json.dumps({**data, "qty": "6.6"}).encode()
        return record.value

    prefix = "x" + deployment.prefix
    copy_history(deployment, prefix, change)
    undecided = {"signal_id": "ghost-1", "portfolio_id": "alpha", "symbol": "ETH-USD", "side": "buy",
                 "score": "0.9", "price": "2500", "ts": demo_session.T0 + 10}
    copied = load_topics(ROOT / "topics" / "topics.toml", prefix)

    async def add_signal():
        producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(copied.name("signals"), json.dumps(undecided).encode(), key=b"alpha")
        finally:
            await producer.stop()

    asyncio.run(add_signal())

    code, report, _ = deployment.audit(prefix=prefix)

    assert code == 1 and not report["ok"]
    fields = {(m["signal_id"], m["field"]) for m in report["mismatches"]}
    assert ("a-1", "notional") in fields and ("a-1", "qty") in fields
    assert ("b-3", "order.qty") in fields
    assert {s["signal_id"] for s in report["signals_without_decision"]} == {"c-2", "ghost-1"}
    assert [o["signal_id"] for o in report["orders_without_decision"]] == ["c-2"]
    # nothing else is blamed: every other decision still verifies
    assert {signal for signal, _ in fields} == {"a-1", "b-3"}
    assert report["verified"] == len(decisions) - 3


def test_audit_flags_an_unknown_config_hash(deployment, workers):
    workers("--preset", "conviction")
    deployment.publish([("instruments", demo_session.INSTRUMENTS[1]),
                        ("signals", {"signal_id": "s1", "portfolio_id": "p", "symbol": "ETH-USD", "side": "buy",
                                     "score": "0.5", "price": "2500", "ts": demo_session.T0})])
    deployment.wait_for("decisions", 1)
    prefix = "y" + deployment.prefix
    copy_history(deployment, prefix, lambda role, record: None if role == "config" else record.value)
    code, report, _ = deployment.audit(prefix=prefix)
    assert code == 1
    assert len(report["unresolvable_config_hashes"]) == 1


def test_a_what_if_with_a_tighter_cap_accepts_less_and_plots_both_curves(deployment, workers, tmp_path):
    import struct
    import subprocess

    from tests.integration.harness import SIZER

    workers("--preset", "graduated")
    deployment.run_demo_session()
    plot = tmp_path / "plots" / "what-if.png"  # a folder --plot makes

    done = subprocess.run([SIZER, "replay", "--from-kafka", "--preset", "graduated", "--json", "--plot", str(plot)],
                          env=deployment.env(SIZING_PORTFOLIO_CAP="0.5%"), capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    bravo = report["portfolios"]["bravo"]
    assert bravo["recorded"]["accepted"] == 10 and bravo["what_if"]["accepted"] == 5
    assert bravo["recorded"]["highest_exposure"] == "990" and bravo["what_if"]["highest_exposure"] == "495"
    recorded_total = sum(p["recorded"]["accepted"] for p in report["portfolios"].values())
    what_if_total = sum(p["what_if"]["accepted"] for p in report["portfolios"].values())
    assert what_if_total < recorded_total
    assert {c["signal_id"] for c in report["changed"]} == {"b-6", "b-7", "b-8", "b-9", "b-10"}
    # a real PNG of a sensible size, with a panel for every portfolio
    data = plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width == 1000 and height >= 4 * 300
    assert "plot:" in done.stderr and "bravo" in done.stderr
