"""The kill switch and venue units on the real broker (issue 27): a breach during an
operator's halt latches and survives a plain resume, a withdrawal leaves the
drawdown where it was, `resume --clear max_drawdown` re-arms it, a fill of 43
contracts is 430 CRV held; `sizer control status` shows both latches and the
audit re-derives every decision."""

from __future__ import annotations

import json
import subprocess

from tests.builders import T0, closed, instrument, leg, signal
from tests.integration.harness import SIZER, Deployment

ENV = {"SIZING_MAX_DRAWDOWN_PCT": "5", "SIZING_PAIR_CAP_USD": "5000"}
# OKX CRV-USDT-SWAP: ctVal 10 CRV, lotSz 1, minSz 1
CRV_SWAP = instrument("CRV-SWAP", {**leg("CRV-USDT-SWAP", "buy", qty_step="1", min_qty="1"), "kind": "linear",
                                   "contract_size": "10"})


def control(deployment: Deployment, *args: str) -> dict:
    done = subprocess.run([SIZER, "control", *args, "--timeout", "90"], env=deployment.env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def entry(journal_line: dict) -> tuple[str, dict]:
    return journal_line["topic"], journal_line["value"]


def test_the_drawdown_latch_survives_a_halt_and_a_plain_resume_and_contracts_are_held_in_base(deployment, workers):
    workers("--preset", "conviction", **ENV)
    deployment.publish([entry(CRV_SWAP), entry(signal("p1", "CRV-SWAP", "1", "2.3195", T0, signal_id="a"))])
    [first] = [r.json() for r in deployment.wait_for("orders", 1)]
    assert (first["base_qty"], first["legs"][0]["qty"]) == ("430", "43")
    deployment.publish([("fills", {"event_id": "f1", "portfolio_id": "p1", "ts": T0 + 1, "type": "order_filled",
                                   "order_id": first["order_id"], "symbol": "CRV-SWAP", "qty": "43",
                                   "price": "2.3195", "final": True, "venue_symbol": "CRV-USDT-SWAP"})])
    deployment.wait_consumed("fills")

    control(deployment, "halt", "--portfolio", "p1", "--reason", "venue outage", "--operator", "alice")
    deployment.publish([entry(closed("p1", "OTHER", "1", "10", "-10000", T0 + 2, event_id="f2"))])  # 10% down
    deployment.wait_consumed("fills")
    resumed = control(deployment, "resume", "--portfolio", "p1", "--reason", "venue back")["state"]
    assert resumed["halted"] is False  # the operator's halt is lifted ...
    assert resumed["max_drawdown"]["detail"] == "equity=90000 peak_equity=100000 drawdown_pct=10 max_drawdown_pct=5"
    assert (resumed["equity"], resumed["peak_equity"], resumed["drawdown_pct"]) == ("90000", "100000", "10")

    deployment.publish([entry(signal("p1", "CRV-SWAP", "1", "2.3195", T0 + 3, signal_id="b"))])
    deployment.wait_for("decisions", 2)
    withdrawn = control(deployment, "adjust-equity", "--portfolio", "p1", "--amount", "-45000",
                        "--reason", "withdrawal of half")["state"]
    assert (withdrawn["equity"], withdrawn["peak_equity"], withdrawn["drawdown_pct"]) == ("45000", "50000", "10")
    cleared = control(deployment, "resume", "--portfolio", "p1", "--reason", "reviewed", "--clear", "max_drawdown")
    assert cleared["state"]["max_drawdown"] is None and cleared["state"]["peak_equity"] == "45000"

    deployment.publish([entry(signal("p1", "CRV-SWAP", "1", "2.3195", T0 + 4, signal_id="c"))])
    decisions = {d["signal_id"]: d for d in (r.json() for r in deployment.wait_for("decisions", 3))}
    latched = decisions["b"]
    assert (latched["reason"], latched["trace"]["state"]["halt"]) == ("MAX_DRAWDOWN", None)
    after = decisions["c"]
    assert after["outcome"] == "accepted"
    assert after["trace"]["state"]["positions"] == "997.385"  # 430 CRV held, not 43
    code, report, _ = deployment.audit()
    assert (code, report["ok"], report["verified"]) == (0, True, 3), report
