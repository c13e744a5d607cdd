"""`sizer publish --journal` and `sizer tail`: a newcomer's own traffic through a real worker."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from tests.integration.harness import SIZER

ETH = {"symbol": "ETH-USD", "legs": [{"venue_symbol": "ETHUSDT", "side": "buy", "qty_step": "0.001",
                                       "min_qty": "0.001", "max_qty": None, "min_notional": "5"}]}


def signal_line(signal_id: str, portfolio: str = "p1", ts: str = "2026-01-01T00:00:00Z") -> str:
    return json.dumps({"topic": "signals", "value": {
        "signal_id": signal_id, "portfolio_id": portfolio, "symbol": "ETH-USD", "side": "buy", "score": "0.9",
        "price": "2500", "ts": ts}})


def sizer(deployment, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([SIZER, *args], env=deployment.env(), capture_output=True, text=True, timeout=120,
                          **kwargs)


def test_publish_a_journal_then_tail_decisions_orders_and_dead_letters(deployment, workers, tmp_path):
    workers("--preset", "graduated")
    journal = tmp_path / "mine.jsonl"
    # the instrument written last: publish sends it first, so the signals find it
    journal.write_text("\n".join([
        signal_line("s-1"), signal_line("s-2", portfolio="p2"),
        json.dumps({"topic": "signals", "value": {"signal_id": "s-3", "portfolio_id": "p1"}}),  # dead-lettered
        json.dumps({"topic": "instruments", "value": ETH}),
    ]) + "\n")

    refused = sizer(deployment, "publish", "--journal", str(journal))
    assert refused.returncode == 1, refused.stderr  # nothing sent: one record would be dead-lettered
    assert f"{journal}:3: MISSING_FIELD: symbol: Field required" in refused.stderr  # as sizer replay reports it
    done = sizer(deployment, "publish", "--journal", str(journal), "--force")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"published 4 records: 1 to {deployment.topics.name('instruments')}, "
                                   f"3 to {deployment.topics.name('signals')} "
                                   f"(1 record the worker will dead-letter, --force)")
    deployment.wait_for("decisions", 2)
    deployment.wait_for("dlq", 1)
    instruments = deployment.read("instruments")
    signals = deployment.read("signals")
    assert instruments[0].timestamp <= min(record.timestamp for record in signals)
    assert sorted(record.key for record in signals) == [b"p1", b"p1", b"p2"]

    table = sizer(deployment, "tail", "decisions")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["time", "topic", "where", "portfolio", "what"]
    rows = [line.split() for line in lines[2:]]
    assert sorted((row[1], row[3], row[4], row[7]) for row in rows) == [
        ("decisions", "p1", "s-1", "accepted"), ("decisions", "p2", "s-2", "accepted")]

    orders = [json.loads(line) for line in sizer(deployment, "tail", "orders", "--json").stdout.splitlines()]
    assert sorted(order["value"]["signal_id"] for order in orders) == ["s-1", "s-2"]
    assert all(order["topic"] == deployment.topics.name("orders") for order in orders)

    dead, = [json.loads(line) for line in sizer(deployment, "tail", "dlq", "--json").stdout.splitlines()]
    assert dead["headers"]["sizer.reason"] == "MISSING_FIELD"
    assert dead["headers"]["sizer.source.topic"] == deployment.topics.name("signals")
    assert dead["key"] == "p1" and json.loads(dead["value"])["signal_id"] == "s-3"
    dlq_table = sizer(deployment, "tail", "dlq").stdout.splitlines()
    assert "MISSING_FIELD" in dlq_table[2] and "symbol: Field required" in dlq_table[2]


def test_tail_follow_prints_new_decisions_as_they_commit_until_interrupted(deployment, workers, tmp_path):
    workers("--preset", "graduated")
    follower = subprocess.Popen([SIZER, "tail", "decisions", "--follow", "--json"], env=deployment.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        journal = tmp_path / "later.jsonl"
        journal.write_text(json.dumps({"topic": "instruments", "value": ETH}) + "\n" + signal_line("late-1") + "\n")
        assert sizer(deployment, "publish", "--journal", str(journal)).returncode == 0
        line = follower.stdout.readline()  # blocks until the decision is committed and printed
        assert json.loads(line)["value"]["signal_id"] == "late-1"
        follower.send_signal(signal.SIGINT)
        code = follower.wait(timeout=30)
    finally:
        follower.kill()  # nothing once it has exited; a failure never leaves a `sizer tail` behind
        follower.wait()
    assert code == 0, follower.stderr.read()
