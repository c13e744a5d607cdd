"""Derivatives venues size in contracts (issue 27), through the real `sizer replay`:
each leg's `qty` in its venue's units, one base quantity across legs, fills
converted by the leg they name, exposure in quote notional, inverse contracts
rounded down with their residual in the trace, and instruments the product
cannot size refused at admission."""

from __future__ import annotations

import json
import os
import subprocess
from decimal import Decimal

from tests.acceptance.conftest import _sizer
from tests.builders import T0, instrument, journal_text, leg, signal


def contract_leg(venue_symbol: str, side: str, kind: str, contract_size: str, qty_step: str, min_qty: str = "0",
                 max_qty: str | None = None, min_notional: str = "0") -> dict:
    return {**leg(venue_symbol, side, qty_step=qty_step, min_qty=min_qty, max_qty=max_qty,
                  min_notional=min_notional), "kind": kind, "contract_size": contract_size}


# OKX CRV-USDT-SWAP: ctVal 10 CRV, lotSz 1, minSz 1 (the venue figures)
CRV_SWAP = instrument("CRV-SWAP", contract_leg("CRV-USDT-SWAP", "buy", "linear", "10", "1", min_qty="1"))
# the same swap hedged against spot
CRV_BASIS = instrument("CRV-BASIS", leg("CRVUSDT", "buy", qty_step="0.1", min_notional="5"),
                       contract_leg("CRV-USDT-SWAP", "sell", "linear", "10", "1", min_qty="1"))
# Binance BTCUSDT spot against COIN-M BTCUSD_PERP (contractSize 100 USD)
BTC_INVERSE = instrument("BTC-INVERSE", leg("BTCUSDT", "buy", qty_step="0.00001", min_notional="5"),
                         contract_leg("BTCUSD_PERP", "sell", "inverse", "100", "1", min_qty="1"))


def fill(order_id: str, qty: str, price: str, ts: int, venue_symbol: str | None, final: bool = True) -> dict:
    value = {"event_id": f"f-{order_id}-{venue_symbol}-{qty}", "portfolio_id": "p1", "ts": ts,
             "type": "order_filled", "order_id": order_id, "symbol": "CRV-SWAP", "qty": qty, "price": price,
             "final": final}
    if venue_symbol is not None:
        value["venue_symbol"] = venue_symbol
    return {"topic": "fills", "value": value}


def orders(entries: list[dict], tmp_path, env: dict | None = None) -> tuple[list[dict], list[dict], str]:
    """(decisions, orders, stderr) of `replay` over the journal (orders from the library entry point)."""
    path = tmp_path / "journal.jsonl"
    path.write_text(journal_text(entries))
    code = ("import sys,json;from streams.history.replay import replay;from streams.config import load_config;"
            "from streams.wire.models import to_json;"
            "replay(open(sys.argv[1]),load_config('conviction'),"
            "lambda d,o:print(json.dumps([json.loads(to_json(d)),o and json.loads(to_json(o))])),"
            "lambda n,r:print(n,r,file=sys.stderr))")
    done = subprocess.run([os.sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True,
                          env={**os.environ, **(env or {})})
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    return [d for d, _ in rows], [o for _, o in rows], done.stderr


def test_430_crv_is_43_contracts_and_a_fill_of_43_contracts_is_430_crv_held(tmp_path):
    decisions, sent, _ = orders([
        CRV_SWAP, signal("p1", "CRV-SWAP", "1", "2.3195", T0, signal_id="a"),
    ], tmp_path)
    [order] = sent
    # budget 1,000 / 2.3195 = 431.1 CRV -> the step in base units is one contract, 10 CRV -> 430 CRV
    assert (order["base_qty"], order["qty"], order["notional"]) == ("430", "430", "997.385")
    assert order["legs"] == [{"venue_symbol": "CRV-USDT-SWAP", "side": "buy", "qty": "43", "kind": "linear",
                              "contract_size": "10"}]
    assert decisions[0]["trace"]["exchange"]["leg_qty"] == {"CRV-USDT-SWAP": "43"}

    order_id = order["order_id"]
    decisions, _, _ = orders([
        CRV_SWAP, signal("p1", "CRV-SWAP", "1", "2.3195", T0, signal_id="a"),
        fill(order_id, "43", "2.3195", T0 + 1, "CRV-USDT-SWAP"),  # 43 contracts, the venue's units
        signal("p1", "CRV-SWAP", "1", "2.3195", T0 + 2, signal_id="b"),
    ], tmp_path)
    state = decisions[1]["trace"]["state"]
    assert (state["positions"], state["reserved"]) == ("997.385", "0")  # 430 CRV held, not 43
    # the pair cap of 1,000 has 2.615 left: not one contract's worth, never 380 CRV more
    assert (decisions[1]["outcome"], decisions[1]["reason"]) == ("rejected", "PAIR_CAP_REACHED")
    assert decisions[1]["trace"]["caps"]["pair_remaining"] == "2.615"


def test_a_spot_and_linear_pair_hold_one_base_quantity(tmp_path):
    decisions, [order], _ = orders([CRV_BASIS, signal("p1", "CRV-BASIS", "0.5", "2.3195", T0, side="sell")], tmp_path)
    # budget 650 -> 280.2 CRV -> the common base step lcm(0.1, 1 x 10) = 10 -> 280 CRV = 28 contracts
    assert order["base_qty"] == "280"
    assert [(leg["venue_symbol"], leg["side"], leg["qty"]) for leg in order["legs"]] == [
        ("CRVUSDT", "sell", "280"), ("CRV-USDT-SWAP", "buy", "28")]
    assert all(Decimal(leg["qty"]) * Decimal(leg["contract_size"]) == Decimal("280") for leg in order["legs"])


def test_an_inverse_leg_is_sized_in_whole_contracts_with_its_residual_in_the_trace(tmp_path):
    decisions, [order], _ = orders([BTC_INVERSE, signal("p1", "BTC-INVERSE", "1", "50000", T0)], tmp_path,
                                   env={"SIZING_MAX_HEDGE_RESIDUAL_PCT": "5"})
    # 1,000 / 50,000 = 0.02 BTC -> 0.02 x 50,000 / 100 = 10 contracts, exactly: no residual
    assert order["base_qty"] == "0.02"
    assert [leg["qty"] for leg in order["legs"]] == ["0.02", "10"]
    assert decisions[0]["trace"]["exchange"]["hedge_residual"] == {"BTCUSD_PERP": "0"}

    decisions, sent, _ = orders([BTC_INVERSE, signal("p1", "BTC-INVERSE", "1", "61234.5", T0)], tmp_path,
                                env={"SIZING_MAX_HEDGE_RESIDUAL_PCT": "5"})
    # 0.01633 BTC = 999.96 USD -> 9 contracts (900 USD): 99.96 USD unhedged, 9.996% of the notional
    assert (decisions[0]["reason"], sent) == ("HEDGE_MISMATCH", [None])
    assert decisions[0]["trace"]["exchange"]["hedge_residual"] == {"BTCUSD_PERP": "99.959385"}
    assert decisions[0]["trace"]["detail"] == (
        "leg=BTCUSD_PERP hedge_residual=99.959385 notional=999.959385 max_hedge_residual_pct=5")

    decisions, [order], _ = orders([BTC_INVERSE, signal("p1", "BTC-INVERSE", "1", "61234.5", T0)], tmp_path,
                                   env={"SIZING_MAX_HEDGE_RESIDUAL_PCT": "10"})
    assert [leg["qty"] for leg in order["legs"]] == ["0.01633", "9"]


def test_an_inverse_fill_in_contracts_is_held_as_its_quote_notional(tmp_path):
    _, [order], _ = orders([BTC_INVERSE, signal("p1", "BTC-INVERSE", "1", "50000", T0, signal_id="a")], tmp_path)
    decisions, _, _ = orders([
        BTC_INVERSE, signal("p1", "BTC-INVERSE", "1", "50000", T0, signal_id="a"),
        {"topic": "fills", "value": {"event_id": "f1", "portfolio_id": "p1", "ts": T0 + 1, "type": "order_filled",
                                     "order_id": order["order_id"], "symbol": "BTC-INVERSE", "qty": "10",
                                     "price": "40000", "final": True, "venue_symbol": "BTCUSD_PERP"}},
        signal("p1", "BTC-INVERSE", "1", "50000", T0 + 2, signal_id="b"),
    ], tmp_path, env={"SIZING_PAIR_CAP_USD": "5000"})
    # 10 contracts of 100 USD filled at 40,000 = 0.025 BTC held, exposure 1,000 USD (contracts x size)
    state = decisions[1]["trace"]["state"]
    assert (state["positions"], state["reserved"]) == ("1000", "0")


def test_instruments_the_product_cannot_size_are_refused_at_admission_with_the_reason(tmp_path):
    bad = [
        instrument("ALL-INVERSE", contract_leg("BTCUSD_PERP", "buy", "inverse", "100", "1")),
        instrument("SPOT-WITH-SIZE", {**leg("CRVUSDT"), "contract_size": "10"}),
        instrument("QUANTO", contract_leg("ETHUSD", "buy", "quanto", "0.000001", "1")),
    ]
    decisions, _, stderr = orders([*bad, *(signal("p1", i["value"]["symbol"], "1", "10", T0) for i in bad)],
                                  tmp_path)
    assert [d["reason"] for d in decisions] == ["UNKNOWN_INSTRUMENT"] * 3  # never sized by guess
    assert "every leg is inverse" in stderr
    assert "contract_size 10 on a spot leg" in stderr
    assert "kind" in stderr and "'spot', 'linear' or 'inverse'" in stderr


def test_the_example_instruments_are_admitted_and_size_one_base_quantity():
    from streams.config import load_config
    from streams.engine.constraints import fit_to_legs
    from streams.wire.models import EXAMPLE_INSTRUMENTS, Instrument, validate

    linear, inverse = (validate(Instrument, example) for example in EXAMPLE_INSTRUMENTS)
    budget, price = Decimal("1000"), Decimal("61234.5")
    fit = fit_to_legs(budget, price, linear.legs, load_config("conviction").max_hedge_residual_pct)
    # common base step lcm(0.00001, 0.01 x 0.01 BTC) = 0.0001 BTC: 0.0163 BTC = 1.63 contracts of 0.01 BTC
    assert (fit.reason, fit.qty, fit.leg_qty) == (None, Decimal("0.0163"), (Decimal("0.0163"), Decimal("1.63")))
    fit = fit_to_legs(budget, price, inverse.legs, Decimal("10"))
    assert (fit.reason, fit.qty, fit.leg_qty) == (None, Decimal("0.01633"), (Decimal("0.01633"), Decimal("9")))
