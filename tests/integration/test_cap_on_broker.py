"""The cap's kinds of fault (issue 12) through a real worker on the real broker:
the same decisions as `sizer replay` on the same journal, FUTURE_TIMESTAMP in
the dead-letter topic with the record's timestamp, and an audit that re-derives
every decision."""

from __future__ import annotations

import json
import os
import subprocess

from streams.engine import order_id_for
from tests.acceptance.conftest import _sizer
from tests.builders import T0, closed, filled, instrument, journal_text, leg, signal

SECOND = 1000
ENV = {"SIZING_SIGNAL_DEDUPE_WINDOW": "1", "SIZING_EXPOSURE_BASIS": "mark", "SIZING_PORTFOLIO_CAP": "3500"}
FAR_FUTURE = 2082758400000  # 2036-01-01: ahead of any record timestamp this test writes

INSTRUMENTS = [
    instrument("X", leg("XUSDT", qty_step="0.01")),
    instrument("Y", leg("YUSDT", qty_step="0.01")),
    instrument("P", leg("PSPOT", "buy", qty_step="0.01"), leg("PPERP", "sell", qty_step="0.01")),
    instrument("XN", {**leg("XNUSDT", qty_step="0.01"), "max_notional": "500"}),
    instrument("BASIS", leg("BTCUSDT", qty_step="0.001", min_qty="0.001"),
               leg("BTCUSDT-PERP", "sell", qty_step="0.001", min_qty="0.001", max_qty="0.0005")),
    instrument("ONE", leg("ONEUSDT", qty_step="1")),
]


def leg_fill(portfolio, signal_id, venue, qty):
    entry = filled(portfolio, order_id_for(portfolio, signal_id), "P", qty, "500", T0, final=True)
    entry["value"]["venue_symbol"] = venue
    return entry


def unscored(portfolio, symbol, price):
    entry = signal(portfolio, symbol, "0", price, T0)
    entry["value"]["score"] = None
    return entry


FIRST = [  # signals before any fill
    signal("pc", "X", "0.9", "10", T0, signal_id="c1"),
    signal("pc", "UNKNOWN", "0.9", "10", T0 + 10 * 86_400 * SECOND, signal_id="c2"),
    signal("pc", "X", "0.9", "10", T0 + SECOND, signal_id="c3"),
    signal("pd", "X", "1", "10", T0, signal_id="d1"), signal("pd", "Y", "1", "10", T0, signal_id="d2"),
    signal("pd", "X", "1", "20", T0 + SECOND, signal_id="d1"),
    signal("pm", "X", "1", "100", T0, signal_id="m1"),
    signal("pl", "P", "1", "500", T0, signal_id="l1"),
    signal("pn", "XN", "1", "100", T0, signal_id="n1"),
    signal("pq", "BASIS", "0.9", "50000", T0, signal_id="q1"),
    signal("po", "ONE", "1", "1E-13", T0, signal_id="o1"),
    unscored("pu", "X", "10"),
]
FILLS = [
    filled("pm", order_id_for("pm", "m1"), "X", "10", "100", T0),
    leg_fill("pl", "l1", "PSPOT", "2"), leg_fill("pl", "l1", "PPERP", "2"),
    closed("pc", "X", "1", "10", "-5", T0 + 2 * SECOND),
]
THEN = [  # signals after the fills
    signal("pm", "X", "1", "300", T0 + 400 * SECOND, signal_id="m2"),
    signal("pm", "X", "1", "10", T0 + 50 * SECOND, signal_id="m3"),
    signal("pm", "Y", "1", "100", T0 + 401 * SECOND, signal_id="m4"),
    signal("pl", "Y", "1", "100", T0 + SECOND, signal_id="l2"),
]


def comparable(decision):
    """A decision without where its signal was read (partitions differ from the journal's)."""
    trace = {key: value for key, value in decision["trace"].items() if key != "input"}
    return {**decision, "trace": trace}


def test_the_worker_decides_every_kind_as_replay_does_and_the_audit_agrees(deployment, workers, tmp_path):
    workers("--preset", "conviction", **ENV)
    future = signal("pf", "X", "0.9", "10", FAR_FUTURE, signal_id="f1")

    deployment.publish([(e["topic"], e["value"]) for e in INSTRUMENTS])
    deployment.publish([(e["topic"], e["value"]) for e in FIRST + [future]])
    deployment.wait_for("decisions", len(FIRST))
    deployment.publish([(e["topic"], e["value"]) for e in FILLS])
    deployment.wait_consumed("fills")
    deployment.publish([(e["topic"], e["value"]) for e in THEN])
    records = deployment.wait_for("decisions", len(FIRST) + len(THEN))

    journal = tmp_path / "journal.jsonl"
    journal.write_text(journal_text(INSTRUMENTS + FIRST + FILLS + THEN))
    done = subprocess.run([*_sizer(), "replay", "--journal", str(journal), "--preset", "conviction"],
                          capture_output=True, text=True, env={**os.environ, **ENV}, check=True)
    expected = {(d["portfolio_id"], d["signal_id"], d["trace"]["signal"]["price"]): comparable(d)
                for d in map(json.loads, done.stdout.splitlines())}
    worker = {(d["portfolio_id"], d["signal_id"], d["trace"]["signal"]["price"]): comparable(d)
              for d in (r.json() for r in records)}
    assert worker == expected
    # the kinds decided as DESIGN.md says, not merely alike
    reasons = {key[:2]: (d["outcome"], d["reason"]) for key, d in worker.items()}
    assert reasons[("pc", "c3")] == ("accepted", None)
    assert (reasons[("pm", "m3")], worker[("pm", "m4", "100")]["notional"]) == (("rejected", "STALE_SIGNAL"), "500")
    assert worker[("pl", "l2", "100")]["trace"]["state"]["positions"] == "1000"
    assert reasons[("po", "o1")] == ("rejected", "ORDER_OUT_OF_BOUNDS")
    assert worker[("pn", "n1", "100")]["notional"] == "500"

    dead, = [r for r in deployment.read("dlq") if r.header("sizer.source.topic") == deployment.topics.name("signals")]
    assert dead.header("sizer.reason") == "FUTURE_TIMESTAMP"
    assert json.loads(dead.value)["signal_id"] == "f1"
    assert int(dead.header("sizer.source.timestamp")) < FAR_FUTURE - 60 * SECOND

    code, report, _ = deployment.audit()
    assert (code, report["ok"], report["verified"]) == (0, True, len(FIRST) + len(THEN)), report
