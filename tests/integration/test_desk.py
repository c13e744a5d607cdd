"""A desk's first hour through the CLI on the real broker (issue 33): `sizer publish`
checks every record first and sends all or nothing, `--in-order` makes the live
worker decide a journal that mixes topics as `sizer replay` does, `sizer status`
shows each portfolio's room under its caps, `sizer tail` merges inputs and
outputs in time, and every command names a missing topic and exits 3."""

from __future__ import annotations

import json
import subprocess
import uuid
from decimal import Decimal

from streams.engine import order_id_for
from tests.builders import T0, canceled, closed, control, filled, instrument, journal_text, leg, signal
from tests.integration.harness import SIZER

SYMBOLS = ("A", "B", "C", "D", "E", "F")


def sizer(deployment, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([SIZER, *args], env=deployment.env(**env), capture_output=True, text=True, timeout=180)


def test_publish_checks_every_record_as_the_worker_would_and_sends_all_or_nothing(deployment, tmp_path):
    good = [instrument("A", leg("AUSDT")), signal("p1", "A", "0.9", "100", signal_id="ok-1")]
    bad = [
        {"topic": "signals", "value": {**good[1]["value"], "signal_id": "b-1", "score": 3}},
        {"topic": "signals", "value": {**good[1]["value"], "signal_id": "b-2", "price": "3,000"}},
        {"topic": "signals", "value": {**good[1]["value"], "signal_id": "b-3", "side": "BUY"}},
        {"topic": "signals", "value": {**good[1]["value"], "signal_id": "b-4", "ts": "2026-13-01T00:00:00Z"}},
    ]
    journal = tmp_path / "mixed.jsonl"
    journal.write_text(journal_text(good + bad))

    refused = sizer(deployment, "publish", "--journal", str(journal))
    assert refused.returncode == 1, refused.stderr
    reported = refused.stderr.splitlines()
    assert [line.split(": ")[0] for line in reported[:4]] == [f"{journal}:{n}" for n in (3, 4, 5, 6)]
    assert all("INVALID_FIELD" in line and "(the worker would dead-letter it)" in line for line in reported[:4])
    assert "score" in reported[0] and "price" in reported[1] and "side" in reported[2] and "ts" in reported[3]
    assert reported[4] == f"nothing published: 4 bad lines in {journal} (--force sends what the worker would dead-letter)"
    assert refused.stdout == ""
    assert all(sum(deployment.end_offsets(role).values()) == 0 for role in ("signals", "instruments"))

    dry = sizer(deployment, "publish", "--journal", str(journal), "--dry-run", "--force")
    assert (dry.returncode, dry.stdout.strip()) == (0, (
        f"would publish 6 records: 1 to {deployment.topics.name('instruments')}, "
        f"5 to {deployment.topics.name('signals')} (4 records the worker will dead-letter, --force)")), dry.stderr
    assert sum(deployment.end_offsets("signals").values()) == 0

    forced = sizer(deployment, "publish", "--journal", str(journal), "--force")
    assert forced.returncode == 0, forced.stderr
    assert sum(deployment.end_offsets("signals").values()) == 5
    assert sum(deployment.end_offsets("instruments").values()) == 1


def test_every_command_names_a_missing_topic_in_one_line_and_exits_3(deployment, tmp_path):
    absent = f"absent{uuid.uuid4().hex[:6]}-"
    journal = tmp_path / "one.jsonl"
    journal.write_text(journal_text([signal("p1", "A", "0.9", "100")]))
    expected = {
        ("publish", "--journal", str(journal)): f"{absent}signals",
        ("control", "status"): f"{deployment.app_id}-controls-changelog",
        ("control", "halt", "--portfolio", "p1", "--reason", "x"): f"{absent}controls",
        ("status",): f"{deployment.app_id}-exposure-changelog",
        ("tail", "fills"): f"{absent}fills",
        ("audit",): f"{absent}signals",
    }
    for args, topic in expected.items():
        done = sizer(deployment, *args, SIZER_TOPIC_PREFIX=absent)
        lines = done.stderr.strip().splitlines()
        assert (done.returncode, len(lines)) == (3, 1), (args, done.stderr)
        assert topic in lines[0] and "missing" in lines[0], (args, lines[0])
        assert done.stdout == "", (args, done.stdout)


def desk_session() -> list[dict]:
    """desk-b fills its 5,000 USD cap with five 1,000 USD orders, then a cancel, a fill
    and a losing partial close free room that its next signal needs; then a halt.
    desk-a holds one reservation."""
    b = [signal("desk-b", symbol, "1", "100", ts=T0 + n * 1000, signal_id=f"b-{symbol}")
         for n, symbol in enumerate("ABCDE", start=1)]
    return [
        *(instrument(symbol, leg(f"{symbol}USDT")) for symbol in SYMBOLS),
        *b,
        signal("desk-a", "A", "0.5", "100", ts=T0 + 5000, signal_id="a-A"),
        canceled("desk-b", order_id_for("desk-b", "b-A"), ts=T0 + 6000),
        filled("desk-b", order_id_for("desk-b", "b-B"), "B", "10", "100", ts=T0 + 7000),
        closed("desk-b", "B", "4", "90", "-40", ts=T0 + 8000),
        signal("desk-b", "F", "1", "100", ts=T0 + 9000, signal_id="b-F"),  # fits only after the fills
        control("desk-b", "halt", ts=T0 + 10_000, operator="alice", reason="desk review"),
        signal("desk-b", "A", "1", "100", ts=T0 + 11_000, signal_id="b-A2"),  # HALTED
    ]


def test_a_desk_publishes_in_order_then_reads_status_and_tail(deployment, workers, tmp_path):
    journal = tmp_path / "desk.jsonl"
    journal.write_text(journal_text(desk_session()))
    workers("--preset", "conviction")
    published = sizer(deployment, "publish", "--journal", str(journal), "--in-order")
    assert published.returncode == 0, published.stderr

    # live, in file order: every decision as `sizer replay` decides the journal
    replayed = sizer(deployment, "replay", "--journal", str(journal), "--preset", "conviction")
    expected = {d["signal_id"]: (d["outcome"], d["reason"], d["qty"]) for d in map(json.loads, replayed.stdout.splitlines())}
    live = {d["signal_id"]: (d["outcome"], d["reason"], d["qty"]) for d in
            (r.json() for r in deployment.wait_for("decisions", len(expected)))}
    assert live == expected
    assert expected["b-F"] == ("accepted", None, "10") and expected["b-A2"][1] == "HALTED"

    # the room, from an independent reckoning of the session: B holds 6 of 10 (entry 600), C, D, E and F
    # reserve 1,000 each; the cap is 5,000 (conviction), the pair cap 1,000
    shown = sizer(deployment, "status", "--portfolio", "desk-b", "--json")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    b, = status["portfolios"]
    assert (b["equity"], b["peak_equity"], b["drawdown_pct"]) == ("99960", "100000", "0.04")
    assert (b["phase"], b["consecutive_losses"], b["closed_trades"]) == (1, 1, 1)
    assert [(x["latch"], x["by"], x["detail"]) for x in b["in_force"]] == [("HALTED", "alice", "desk review")]
    assert b["positions"] == [{"symbol": "B", "qty": "6", "entry_notional": "600", "value": "600"}]
    assert [(r["order_id"], r["symbol"], r["notional"]) for r in b["reservations"]] == [
        (order_id_for("desk-b", f"b-{s}"), s, "1000") for s in "CDEF"]
    caps = {(c["cap"], c["symbol"]): (Decimal(c["limit"]), Decimal(c["exposure"]), Decimal(c["remaining"]))
            for c in b["caps"]}
    assert caps == {("portfolio", None): (5000, 4600, 400), ("pair", "B"): (1000, 600, 400),
                    **{("pair", s): (1000, 1000, 0) for s in "CDEF"}}
    assert status["config_hash"] == deployment.read("decisions")[0].json()["config_hash"]  # the workers' own

    table = sizer(deployment, "status")
    assert table.returncode == 0, table.stderr
    text = table.stdout
    assert text.index("desk-a") < text.index("desk-b")
    assert "IN FORCE HALTED by alice" in text and "desk review" in text
    portfolio_rows = [line.split() for line in text.splitlines() if line.split()[:1] == ["portfolio"]]
    assert [row[1:5] for row in portfolio_rows] == [["5000", "650", "4350", "13%"], ["5000", "4600", "400", "92%"]]

    # tail: inputs and outputs of one portfolio, merged in time
    tailed = sizer(deployment, "tail", "--portfolio", "desk-b", "--json")
    assert tailed.returncode == 0, tailed.stderr
    rows = [json.loads(line) for line in tailed.stdout.splitlines()]
    assert {row["role"] for row in rows} == {"decisions", "orders", "fills", "controls"}
    assert all(row["key"] == "desk-b" or row["value"]["portfolio_id"] == "desk-b" for row in rows)
    assert [row["time"] for row in rows] == sorted(row["time"] for row in rows)
    assert sum(row["role"] == "fills" for row in rows) == 3 and sum(row["role"] == "decisions" for row in rows) == 7
    halt, = [row for row in rows if row["role"] == "controls"]
    # published after the fills were applied: its record time is after every decision before it
    later = sizer(deployment, "tail", "decisions", "controls", "--portfolio", "desk-b", "--from", halt["time"])
    assert later.returncode == 0, later.stderr
    lines = later.stdout.splitlines()[2:]
    assert [line.split()[1] for line in lines] == ["controls", "decisions"]
    assert "b-A2" in lines[1] and "HALTED" in lines[1] and "halt by alice: desk review" in lines[0]
