"""Operator controls through the real `sizer replay` (issue 15): halt, resume,
release, equity adjustments, the drawdown kill switch, duplicate commands."""

from __future__ import annotations

from tests.builders import T0, closed, control, instrument, leg, signal

X = instrument("X", leg("XUSDT", qty_step="0.01"))
Y = instrument("Y", leg("YUSDT", qty_step="0.01"))


def reasons(decisions):
    return [d["reason"] for d in decisions]


def test_a_halted_portfolio_rejects_every_signal_until_resumed(replay):
    decisions = replay([
        X, signal("p1", "X", "0.5", "10", T0),
        control("p1", "halt", T0, command_id="c-halt", operator="alice", reason="venue outage"),
        signal("p1", "X", "0.5", "10", T0 + 1), signal("p1", "UNKNOWN", "0.5", "10", T0 + 2),
        signal("p2", "X", "0.5", "10", T0 + 3),  # another portfolio: unaffected
        control("p1", "resume", T0 + 4, command_id="c-resume"),
        signal("p1", "X", "0.5", "10", T0 + 5),
    ], "--preset", "conviction", env={"SIZING_PAIR_CAP_USD": "5000"})
    assert reasons(decisions) == [None, "HALTED", "HALTED", None, None]
    assert decisions[1]["trace"]["detail"] == "command_id=c-halt operator=alice reason=venue outage"
    assert decisions[1]["trace"]["input"]["last_control_offset"] == 0
    # sized as before the halt: the same 650 (0.3 + 0.7 x 0.5 of 1,000), on top of the first
    assert [d["notional"] for d in decisions] == ["650", None, None, "650", "650"]
    assert decisions[4]["trace"]["state"]["reserved"] == "650"


def test_release_frees_exactly_that_reservation(replay):
    first = replay([X, Y, signal("p1", "X", "1", "10", T0, signal_id="a"),
                    signal("p1", "Y", "1", "10", T0, signal_id="b")], "--preset", "conviction")
    order_a = first[0]["order_id"]
    decisions = replay([
        X, Y, signal("p1", "X", "1", "10", T0, signal_id="a"), signal("p1", "Y", "1", "10", T0, signal_id="b"),
        control("p1", "release", T0, order_id=order_a, reason="cancel lost by the execution engine"),
        control("p1", "release", T0, order_id="o-never-made", reason="typo"),  # changes nothing
        signal("p1", "Y", "1", "10", T0 + 1, signal_id="c"),
    ], "--preset", "conviction", env={"SIZING_PORTFOLIO_CAP": "1500", "SIZING_PAIR_CAP_USD": "5000"})
    assert [d["notional"] for d in decisions] == ["1000", "500", "1000"]  # b shrunk under the 1,500 cap
    assert decisions[2]["trace"]["state"]["reserved"] == "500"  # b's 500 stays, a's 1,000 is gone


def test_a_deposit_doubles_a_percentage_cap_and_the_base_and_leaves_streaks_alone(replay):
    decisions = replay([
        X, closed("p1", "X", "1", "10", "-1", T0), closed("p1", "X", "1", "10", "-1", T0),
        signal("p1", "X", "0.9", "10", T0 + 1),
        control("p1", "adjust_equity", T0 + 2, amount="100002", reason="deposit"),
        signal("p1", "X", "0.9", "10", T0 + 3),
        control("p1", "adjust_equity", T0 + 4, amount="-150000", reason="withdrawal"),
        signal("p1", "X", "0.9", "10", T0 + 5),
    ], "--preset", "graduated")
    before, after, shrunk = (d["trace"] for d in decisions)
    assert (before["state"]["equity"], after["state"]["equity"], shrunk["state"]["equity"]) == (
        "99998", "200000", "50000")
    assert (before["caps"]["portfolio_cap"], after["caps"]["portfolio_cap"]) == ("999.98", "2000")
    assert (before["base"]["base"], after["base"]["base"], shrunk["base"]["base"]) == ("99.998", "200", "50")
    for trace in (before, after, shrunk):  # two losses: drawdown mode, streaks and trade count unchanged
        assert (trace["state"]["consecutive_losses"], trace["state"]["closed_trades"], trace["state"]["drawdown"]) \
            == (2, 2, True)


def test_max_drawdown_halts_after_the_close_that_crosses_it_and_not_before(replay):
    decisions = replay([
        X, closed("p1", "X", "1", "10", "1000", T0),  # peak 101,000
        closed("p1", "X", "1", "10", "-5049", T0 + 1),  # 95,951: 4.999% below the peak
        signal("p1", "X", "0.9", "10", T0 + 2),
        closed("p1", "X", "1", "10", "-1", T0 + 3),  # 95,950: exactly 5%
        signal("p1", "X", "0.9", "10", T0 + 4),
        control("p1", "resume", T0 + 5, operator="bob", reason="reviewed", clear=["max_drawdown"]),
        signal("p1", "X", "0.9", "10", T0 + 6),
        closed("p1", "X", "1", "10", "-1", T0 + 7),  # re-armed from 95,950: a small loss does not halt
        signal("p1", "X", "0.9", "10", T0 + 8),
    ], "--preset", "conviction", env={"SIZING_MAX_DRAWDOWN_PCT": "5", "SIZING_PAIR_CAP_USD": "5000"})
    assert reasons(decisions) == [None, "MAX_DRAWDOWN", None, None]
    assert decisions[1]["trace"]["detail"] == (
        "operator=sizer reason=equity=95950 peak_equity=101000 drawdown_pct=5 max_drawdown_pct=5")


def test_a_duplicate_command_id_applies_once(replay):
    decisions = replay([
        X, control("p1", "adjust_equity", T0, command_id="dep", amount="100000", reason="deposit"),
        control("p1", "adjust_equity", T0, command_id="dep", amount="100000", reason="deposit, sent twice"),
        signal("p1", "X", "0.9", "10", T0 + 1),
    ], "--preset", "graduated")
    assert decisions[0]["trace"]["state"]["equity"] == "200000"


def test_reset_clock_repairs_a_clock_a_year_ahead_where_resume_does_not(replay):
    year_ms = 365 * 24 * 3600 * 1000
    decisions = replay([
        X,
        # a year ahead, admitted: the journal line has no record timestamp to bound it (as on
        # a topic before the broker bounded record timestamps)
        signal("p1", "X", "0.5", "10", T0 + year_ms, signal_id="future"),
        signal("p1", "X", "0.5", "10", T0 + 1, signal_id="on-time-1"),
        control("p1", "halt", T0 + 2, reason="clock"), control("p1", "resume", T0 + 3, reason="clock"),
        signal("p1", "X", "0.5", "10", T0 + 4, signal_id="on-time-2"),
        control("p1", "reset_clock", T0 + 5, command_id="c-reset", operator="alice", reason="record from 2027"),
        control("p1", "reset_clock", T0 + 6, reason="sent again: the clock is behind it now"),
        signal("p1", "X", "0.5", "10", T0 + 7, signal_id="on-time-3"),
        signal("p1", "X", "0.5", "10", T0 + 1, signal_id="6-ms-late"),  # within max_signal_age_s of the reset clock
    ], "--preset", "conviction", env={"SIZING_PAIR_CAP_USD": "5000", "SIZING_PORTFOLIO_CAP": "5000"})
    assert reasons(decisions) == [None, "STALE_SIGNAL", "STALE_SIGNAL", None, None]
    # the clock the next signal read is the command's time, not a year ahead (the second reset changed nothing)
    assert decisions[3]["trace"]["state"]["latest_ts"] == "2026-01-01T00:00:00.005Z"
    assert [d["notional"] for d in decisions] == ["650", None, None, "650", "650"]


def test_reset_clock_restamps_the_protections_a_clock_a_year_ahead_left_behind(replay):
    # the order rate's opens, a symbol's cooldown and the loss guard's pause are event times
    # too: left a year ahead, they outlive the reset by a year (RATE_LIMITED, COOLDOWN,
    # LOSS_GUARD on every open); restamped at the reset, they run from it, in full
    year_ms = 365 * 24 * 3600 * 1000
    decisions = replay([
        X, Y,
        signal("p1", "X", "0.5", "10", T0 + year_ms, signal_id="future"),  # an open, a year ahead
        closed("p1", "Y", "1", "9", "-1", T0 + year_ms),  # a loss, a year ahead: cooldown of Y, loss guard
        control("p1", "reset_clock", T0 + 5, reason="records from 2027"),
        signal("p1", "X", "0.5", "10", T0 + 20_000, signal_id="paused"),  # the pause runs from the reset
        signal("p1", "X", "0.5", "10", T0 + 40_000, signal_id="rate"),  # the open counts from the reset
        signal("p1", "X", "0.5", "10", T0 + 125_000, signal_id="open-x"),
        signal("p1", "Y", "0.5", "10", T0 + 300_000, signal_id="cooling"),  # cooldown: 600 s from the reset
        signal("p1", "Y", "0.5", "10", T0 + 700_000, signal_id="open-y"),
    ], "--preset", "conviction", env={
        "SIZING_PAIR_CAP_USD": "5000", "SIZING_PORTFOLIO_CAP": "50000", "SIZING_MAX_ORDERS_PER_WINDOW": "1",
        "SIZING_ORDER_RATE_WINDOW_S": "60", "SIZING_COOLDOWN_AFTER_LOSS_S": "600", "SIZING_LOSS_GUARD_COUNT": "1",
        "SIZING_LOSS_GUARD_WINDOW_S": "60", "SIZING_LOSS_GUARD_PAUSE_S": "30"})
    assert [(d["signal_id"], d["reason"]) for d in decisions] == [
        ("future", None), ("paused", "LOSS_GUARD"), ("rate", "RATE_LIMITED"), ("open-x", None),
        ("cooling", "COOLDOWN"), ("open-y", None)]
    assert decisions[1]["trace"]["protections"]["loss_guard"]["paused_until"] == "2026-01-01T00:00:30.005Z"
