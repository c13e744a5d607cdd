"""The kill switch a risk officer can sign (issue 27), through the real `sizer replay`:
two independent latches, the peak under deposits and withdrawals, equity at or
below zero, reduce-only halts, and traces that do not grow with history."""

from __future__ import annotations

import json

from tests.builders import T0, closed, control, instrument, leg, signal

X = instrument("X", leg("XUSDT", qty_step="0.01"))
DRAWDOWN_5 = {"SIZING_MAX_DRAWDOWN_PCT": "5", "SIZING_PAIR_CAP_USD": "5000"}


def reasons(decisions):
    return [d["reason"] for d in decisions]


def test_a_withdrawal_of_half_leaves_a_four_percent_drawdown_at_four_and_a_win_never_trips(replay):
    decisions = replay([
        X, closed("p1", "X", "1", "10", "-4000", T0),  # 96,000: 4% under the 100,000 peak
        control("p1", "adjust_equity", T0 + 1, amount="-48000", reason="withdrawal of half"),
        signal("p1", "X", "0.9", "10", T0 + 2),
        closed("p1", "X", "1", "10", "100", T0 + 3),  # a winning close
        signal("p1", "X", "0.9", "10", T0 + 4),
    ], "--preset", "conviction", env=DRAWDOWN_5)
    assert reasons(decisions) == [None, None]
    after_withdrawal, after_win = (d["trace"]["state"] for d in decisions)
    assert (after_withdrawal["equity"], after_withdrawal["peak_equity"], after_withdrawal["drawdown_pct"]) == (
        "48000", "50000", "4")
    assert (after_win["equity"], after_win["peak_equity"], after_win["drawdown_pct"]) == ("48100", "50000", "3.8")
    assert after_win["max_drawdown"] is None


def test_a_breach_during_a_halt_latches_shows_in_the_decisions_and_survives_a_plain_resume(replay):
    decisions = replay([
        X, control("p1", "halt", T0, command_id="h", operator="alice", reason="venue outage"),
        closed("p1", "X", "1", "10", "-10000", T0 + 1),  # 10% below the peak, while halted
        signal("p1", "X", "0.9", "10", T0 + 2),
        control("p1", "resume", T0 + 3, operator="alice", reason="venue back"),
        signal("p1", "X", "0.9", "10", T0 + 4),
        control("p1", "resume", T0 + 5, operator="risk", reason="reviewed", clear=["max_drawdown"]),
        signal("p1", "X", "0.9", "10", T0 + 6),
        closed("p1", "X", "1", "10", "-1000", T0 + 7),  # re-armed from 90,000: 1.1% does not trip
        signal("p1", "X", "0.9", "10", T0 + 8),
    ], "--preset", "conviction", env=DRAWDOWN_5)
    assert reasons(decisions) == ["MAX_DRAWDOWN", "MAX_DRAWDOWN", None, None]
    during, after_plain_resume = decisions[0]["trace"], decisions[1]["trace"]
    assert during["detail"] == ("operator=sizer reason=equity=90000 peak_equity=100000 drawdown_pct=10 "
                                "max_drawdown_pct=5 halt=HALTED")
    assert (during["state"]["halt"], during["state"]["max_drawdown"]) == (
        "HALTED", "equity=90000 peak_equity=100000 drawdown_pct=10 max_drawdown_pct=5")
    # the plain resume lifted the operator's halt only
    assert (after_plain_resume["state"]["halt"], after_plain_resume["detail"]) == (
        None, "operator=sizer reason=equity=90000 peak_equity=100000 drawdown_pct=10 max_drawdown_pct=5")
    assert decisions[2]["trace"]["state"]["peak_equity"] == "90000"


def test_a_bust_portfolio_rejects_every_open_until_equity_is_positive_again(replay):
    for preset in ("conviction", "graduated"):
        decisions = replay([
            X, closed("p1", "X", "1", "10", "-150000", T0),  # equity -50,000
            signal("p1", "X", "0.9", "10", T0 + 1),
            control("p1", "adjust_equity", T0 + 2, amount="50000", reason="deposit to zero"),
            signal("p1", "X", "0.9", "10", T0 + 3),
            control("p1", "adjust_equity", T0 + 4, amount="20000", reason="recapitalised"),
            signal("p1", "X", "0.9", "10", T0 + 5),
        ], "--preset", preset)
        assert reasons(decisions) == ["EQUITY_EXHAUSTED", "EQUITY_EXHAUSTED", None], preset
        assert decisions[0]["trace"]["detail"] == "equity=-50000"
        assert decisions[1]["trace"]["detail"] == "equity=0"


def test_a_reduce_only_halt_rejects_opens_reduce_only_until_resumed(replay):
    decisions = replay([
        X, control("p1", "halt", T0, command_id="r", operator="alice", reason="de-risk", mode="reduce_only"),
        signal("p1", "X", "0.9", "10", T0 + 1),
        control("p1", "halt", T0 + 2, command_id="f", operator="alice", reason="stop everything"),
        signal("p1", "X", "0.9", "10", T0 + 3),
        control("p1", "resume", T0 + 4, reason="done"),
        signal("p1", "X", "0.9", "10", T0 + 5),
    ], "--preset", "conviction")
    assert reasons(decisions) == ["REDUCE_ONLY", "HALTED", None]
    assert decisions[0]["trace"]["detail"] == "command_id=r operator=alice reason=de-risk"


def test_each_command_is_in_exactly_one_trace_and_a_trace_does_not_grow_with_history(replay):
    entries = [X, control("p1", "halt", T0, reason="long halt")]
    for i in range(200):
        entries.append(control("p1", "adjust_equity", T0 + i, amount="1", reason=f"adjustment {i}"))
        entries.append(signal("p1", "X", "0.9", "10", T0 + i))
    entries += [control("p1", "resume", T0 + 300, reason="over"), signal("p1", "X", "0.9", "10", T0 + 301)]
    decisions = replay(entries, "--preset", "conviction")
    listed = [offset for d in decisions for offset, _ in d["trace"]["input"]["controls_applied"]]
    assert sorted(listed) == list(range(202)) and len(set(listed)) == 202  # every command once
    sizes = [len(json.dumps(d, separators=(",", ":"))) for d in decisions]
    # the halt and the first adjustment ride on the first trace; every later one carries one command
    halted = sizes[1:-1]
    assert max(halted) - min(halted) < 16, (min(halted), max(halted))
    assert decisions[-1]["outcome"] == "accepted" and sizes[-1] < 1500


def test_a_reduce_passes_a_reduce_only_halt_and_a_bust_account_but_never_the_drawdown_latch(replay):
    from tests.builders import filled, reduce

    opened = replay([X, signal("p1", "X", "1", "10", T0, signal_id="a")], "--preset", "conviction")
    order_id = opened[0]["order_id"]
    held = [X, signal("p1", "X", "1", "10", T0, signal_id="a"), filled("p1", order_id, "X", "100", "10", T0 + 1)]
    decisions = replay([
        *held, control("p1", "halt", T0 + 2, reason="de-risk", mode="reduce_only"),
        signal("p1", "X", "1", "10", T0 + 3), reduce("p1", "X", "10", "sell", "0.5", T0 + 4, signal_id="r1"),
    ], "--preset", "conviction")
    assert reasons(decisions[1:]) == ["REDUCE_ONLY", None]
    assert decisions[2]["qty"] == "50"
    decisions = replay([
        *held, closed("p1", "OTHER", "1", "10", "-100000", T0 + 2),  # equity 0
        signal("p1", "X", "1", "10", T0 + 3), reduce("p1", "X", "10", "sell", "0.5", T0 + 4, signal_id="r1"),
    ], "--preset", "conviction")
    assert reasons(decisions[1:]) == ["EQUITY_EXHAUSTED", None]
    decisions = replay([
        *held, closed("p1", "OTHER", "1", "10", "-10000", T0 + 2),  # 10% down: latched
        reduce("p1", "X", "10", "sell", "0.5", T0 + 4, signal_id="r1"),
    ], "--preset", "conviction", env=DRAWDOWN_5)
    assert reasons(decisions[1:]) == ["MAX_DRAWDOWN"]
