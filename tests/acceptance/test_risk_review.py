"""The kill switch, equity, clock rules and units tried again as a risk officer would
(issue 27), with inputs of the same kinds as the issue's examples, through the real
`sizer replay` and `sizer config`. The expected values come from DESIGN.md
("Operator controls", "Configuration", "Messages"), computed here by hand."""

from __future__ import annotations

import json
import os
import subprocess
from decimal import Decimal

from tests.acceptance.conftest import _sizer
from tests.builders import T0, closed, control, instrument, leg, signal

X = instrument("X", leg("XUSDT", qty_step="0.01"))
DRAWDOWN_5 = {"SIZING_MAX_DRAWDOWN_PCT": "5", "SIZING_PAIR_CAP_USD": "5000"}


def latch_state(decision):
    state = decision["trace"]["state"]
    return state["equity"], state["peak_equity"], state["drawdown_pct"], state["max_drawdown"]


def test_a_clear_with_no_latch_tripped_never_moves_the_peak(replay):
    # 4% under the 100,000 peak; the operator sends resume clear max_drawdown though
    # nothing is latched: there is no breach to release and no latch to re-arm, so
    # the drawdown is still measured from 100,000 and a further 4,000 loss (8%) trips
    decisions = replay([
        X, closed("p1", "X", "1", "10", "-4000", T0),
        control("p1", "resume", T0 + 1, operator="bob", reason="just in case", clear=["max_drawdown"]),
        signal("p1", "X", "0.9", "10", T0 + 2),
        closed("p1", "X", "1", "10", "-4000", T0 + 3),
        signal("p1", "X", "0.9", "10", T0 + 4),
    ], "--preset", "conviction", env=DRAWDOWN_5)
    assert latch_state(decisions[0]) == ("96000", "100000", "4", None)
    assert decisions[1]["reason"] == "MAX_DRAWDOWN"
    assert latch_state(decisions[1]) == ("92000", "100000", "8",
                                         "equity=92000 peak_equity=100000 drawdown_pct=8 max_drawdown_pct=5")


def test_a_clear_with_an_operator_halt_and_no_latch_lifts_the_halt_and_keeps_the_peak(replay):
    decisions = replay([
        X, closed("p1", "X", "1", "10", "-3000", T0),
        control("p1", "halt", T0 + 1, reason="venue outage"),
        control("p1", "resume", T0 + 2, reason="venue back", clear=["max_drawdown"]),
        signal("p1", "X", "0.9", "10", T0 + 3),
    ], "--preset", "conviction", env=DRAWDOWN_5)
    assert decisions[0]["outcome"] == "accepted"
    assert latch_state(decisions[0]) == ("97000", "100000", "3", None)


def test_a_portfolio_table_cannot_set_its_own_future_skew(tmp_path):
    # admission judges every input with the deployment's one max_future_skew_s (it is
    # also the input topics' record timestamp bound): a portfolio's own 10 s would
    # pass the clock rules while a 55 s fast input is admitted under the global 60 s,
    # and an on-time signal of that portfolio became STALE_SIGNAL
    path = tmp_path / "sizing.toml"
    path.write_text('[portfolios."fast"]\nmax_future_skew_s = "10"\nmax_signal_age_s = "10"\n')
    done = subprocess.run([*_sizer(), "config", "--config", str(path)], capture_output=True, text=True,
                          env=dict(os.environ), check=False)
    assert done.returncode != 0
    assert "portfolios.fast.max_future_skew_s" in done.stderr and "cannot be set per portfolio" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_portfolio_table_that_breaks_the_clock_rules_against_the_global_skew_is_refused(tmp_path):
    path = tmp_path / "sizing.toml"
    path.write_text('[portfolios."desk-*"]\nmax_signal_age_s = "10"\n')  # global skew 60
    done = subprocess.run([*_sizer(), "config", "--config", str(path)], capture_output=True, text=True,
                          env=dict(os.environ), check=False)
    assert done.returncode != 0
    assert "portfolios.desk-*" in done.stderr and "max_signal_age_s (10) must be at least max_future_skew_s (60)" \
        in done.stderr


def contract_leg(venue_symbol: str, side: str, kind: str, contract_size: str, qty_step: str) -> dict:
    return {**leg(venue_symbol, side, qty_step=qty_step), "kind": kind, "contract_size": contract_size}


def test_a_leg_quantity_the_product_could_not_take_back_as_a_fill_is_never_emitted(replay):
    # a valid but extreme contract: 1e-18 base units a contract. 1,000 USD at price 1
    # is 1,000 base units = 1e21 contracts, and a fill of 1e21 contracts is refused
    # as input (a decimal must be below 1e16): closure rejects at sizing, naming the leg
    tiny = instrument("TINY", contract_leg("TINY-SWAP", "buy", "linear", "0.000000000000000001", "1"))
    decisions = replay([tiny, signal("p1", "TINY", "1", "1", T0)], "--preset", "conviction")
    assert (decisions[0]["outcome"], decisions[0]["reason"]) == ("rejected", "ORDER_OUT_OF_BOUNDS")
    assert decisions[0]["trace"]["detail"].startswith("leg=TINY-SWAP qty=1000000000000000000000: ")
    # the same contract at a price where the contracts fit is sized as usual
    decisions = replay([tiny, signal("p1", "TINY", "1", "1000000000", T0)], "--preset", "conviction")
    assert decisions[0]["outcome"] == "accepted"
    assert Decimal(decisions[0]["qty"]) == Decimal("0.000001")


def test_closure_of_every_leg_quantity_on_a_spot_and_inverse_pair(replay, tmp_path):
    # the order's every leg quantity decodes back as a fill of that leg
    from streams.wire.models import OrderFilled, decode

    pair = instrument("BTC-INV", leg("BTCUSDT", "buy", qty_step="0.00001"),
                      contract_leg("BTCUSD_PERP", "sell", "inverse", "100", "1"))
    decisions = replay([pair, signal("p1", "BTC-INV", "1", "50000", T0)], "--preset", "conviction")
    assert decisions[0]["outcome"] == "accepted"
    for venue_symbol, qty in decisions[0]["trace"]["exchange"]["leg_qty"].items():
        fill = decode(OrderFilled, json.dumps({
            "event_id": "e", "portfolio_id": "p1", "ts": T0, "type": "order_filled", "order_id": "o",
            "symbol": "BTC-INV", "qty": qty, "price": "50000", "venue_symbol": venue_symbol}))
        assert fill.qty == Decimal(qty)


def test_a_whole_reduce_never_leaves_an_inverse_leg_at_zero_contracts(replay):
    # 0.002 BTC opened at 50,000 = 1 contract of 100 USD. A reduce of the whole
    # position at 40,000: 0.002 x 40,000 / 100 = 0.8 contract rounds down to 0. An
    # order selling 0.002 BTC spot and buying 0 contracts unwinds one leg only, and a
    # fill of 0 contracts is no input the product accepts: refused, naming the leg
    from tests.builders import filled, reduce

    pair = instrument("BTC-INV", leg("BTCUSDT", "buy", qty_step="0.00001"),
                      {**contract_leg("BTCUSD_PERP", "sell", "inverse", "100", "1"), "min_qty": "1"})
    env = {"SIZING_PAIR_MAX_USD": "100"}
    opened = replay([pair, signal("p1", "BTC-INV", "1", "50000", T0, signal_id="a")], "--preset", "conviction",
                    env=env)
    assert (opened[0]["qty"], opened[0]["trace"]["exchange"]["leg_qty"]) == (
        "0.002", {"BTCUSDT": "0.002", "BTCUSD_PERP": "1"})
    decisions = replay([
        pair, signal("p1", "BTC-INV", "1", "50000", T0, signal_id="a"),
        filled("p1", opened[0]["order_id"], "BTC-INV", "0.002", "50000", T0 + 1),
        reduce("p1", "BTC-INV", "40000", "sell", None, T0 + 2, signal_id="r"),
    ], "--preset", "conviction", env=env)
    reduced = decisions[1]
    assert (reduced["outcome"], reduced["reason"]) == ("rejected", "BELOW_MIN_QTY")
    assert reduced["trace"]["detail"].startswith("leg=BTCUSD_PERP qty=0: ")
    assert reduced["trace"]["exchange"]["leg_qty"] == {"BTCUSDT": "0.002", "BTCUSD_PERP": "0"}


def test_withdrawing_everything_and_depositing_it_back_keeps_the_drawdown(replay):
    # 4% under the 100,000 peak; the desk withdraws all 96,000, then deposits it back
    # (or withdraws more than it holds, then recapitalises): the round trip is two
    # equity adjustments, and neither may move the drawdown, so 4% stays 4% and a
    # further 2,000 loss (6% of the 100,000 peak) trips the switch
    for out, back in (("-96000", "96000"), ("-100000", "100000")):
        decisions = replay([
            X, closed("p1", "X", "1", "10", "-4000", T0),
            control("p1", "adjust_equity", T0 + 1, amount=out, reason="moved to another account"),
            signal("p1", "X", "0.9", "10", T0 + 2),
            control("p1", "adjust_equity", T0 + 3, amount=back, reason="moved back"),
            signal("p1", "X", "0.9", "10", T0 + 4),
            closed("p1", "X", "1", "10", "-2000", T0 + 5),
            signal("p1", "X", "0.9", "10", T0 + 6),
        ], "--preset", "conviction", env=DRAWDOWN_5)
        assert [d["reason"] for d in decisions] == ["EQUITY_EXHAUSTED", None, "MAX_DRAWDOWN"], out
        assert latch_state(decisions[1]) == ("96000", "100000", "4", None), out
        assert latch_state(decisions[2])[:3] == ("94000", "100000", "6"), out


def test_a_win_on_an_emptied_account_neither_resets_nor_trips_the_switch(replay):
    # emptied at a 4% drawdown, then a winning close takes equity above zero: the
    # drawdown is still 4% (not 0: a close is no deposit), and the win trips nothing
    decisions = replay([
        X, closed("p1", "X", "1", "10", "-4000", T0),
        control("p1", "adjust_equity", T0 + 1, amount="-96000", reason="emptied"),
        closed("p1", "X", "1", "10", "480", T0 + 2),
        signal("p1", "X", "0.9", "10", T0 + 3),
        control("p1", "adjust_equity", T0 + 4, amount="95520", reason="moved back"),
        signal("p1", "X", "0.9", "10", T0 + 5),
    ], "--preset", "conviction", env=DRAWDOWN_5)
    assert [d["reason"] for d in decisions] == [None, None]
    assert latch_state(decisions[0]) == ("480", "500", "4", None)
    assert latch_state(decisions[1]) == ("96000", "100000", "4", None)


def test_portfolio_tables_that_break_the_clock_rules_only_together_are_refused_at_start_up(tmp_path):
    # each table alone keeps the clock rules; portfolio desk-a matches both, and there
    # the TTL of one and the signal age of the other contradict each other: refused at
    # start-up naming both tables, the portfolio id and the rule (it was accepted, and
    # desk-a's first signal failed as a PROCESSING_ERROR)
    path = tmp_path / "sizing.toml"
    path.write_text('[portfolios."desk-*"]\nreservation_ttl_s = "400"\n'
                    '[portfolios."*-a"]\nmax_signal_age_s = "400"\n'
                    '[portfolios."other"]\nmax_signal_age_s = "500"\n')
    done = subprocess.run([*_sizer(), "config", "--config", str(path)], capture_output=True, text=True,
                          env=dict(os.environ), check=False)
    assert done.returncode != 0, done.stdout
    assert "portfolios.desk-* and portfolios.*-a" in done.stderr, done.stderr
    assert "reservation_ttl_s (400) must be unset or at least max_signal_age_s + max_future_skew_s" in done.stderr
    assert "Traceback" not in done.stderr
    # tables that overlap and agree are accepted
    path.write_text('[portfolios."desk-*"]\nreservation_ttl_s = "500"\n'
                    '[portfolios."*-a"]\nmax_signal_age_s = "400"\n')
    done = subprocess.run([*_sizer(), "config", "--config", str(path)], capture_output=True, text=True,
                          env=dict(os.environ), check=False)
    assert done.returncode == 0, done.stderr
