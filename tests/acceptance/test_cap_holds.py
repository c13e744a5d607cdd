"""The cap holds against every input a real trading stack sends (issue 12): each
kind of fault as a journal through the real `sizer replay`, with the decisions
DESIGN.md asks for written in."""

from __future__ import annotations

import json
import os
import subprocess

from tests.acceptance.conftest import _sizer
from tests.builders import T0, canceled, closed, filled, instrument, journal_text, leg, signal

X = instrument("X", leg("XUSDT", qty_step="0.01"))
Y = instrument("Y", leg("YUSDT", qty_step="0.01"))
SECOND = 1000


def outcomes(decisions):
    return [(d["outcome"], d["reason"]) for d in decisions]


def unscored(portfolio, symbol, price, ts=T0, score_field=True):
    entry = signal(portfolio, symbol, "0", price, ts)
    if score_field:
        entry["value"]["score"] = None
    else:
        del entry["value"]["score"]
    return entry


# 1. One clock, poisoned forever.

def test_a_rejected_signal_from_the_far_future_does_not_move_the_clock(replay):
    decisions = replay([
        X, signal("p1", "X", "0.9", "10", T0, signal_id="s1"),
        signal("p1", "UNKNOWN", "0.9", "10", 2082758400000),  # 2036-01-01, unknown symbol
        signal("p1", "X", "0.9", "10", T0 + SECOND, signal_id="s2"),
        signal("p1", "X", "0.9", "10", T0 + 2 * SECOND, signal_id="s3"),
    ], "--preset", "graduated")
    assert outcomes(decisions) == [("accepted", None), ("rejected", "UNKNOWN_INSTRUMENT"),
                                   ("accepted", None), ("accepted", None)]
    assert decisions[1]["trace"]["state"]["clock"] == "2026-01-01T00:00:00.000Z"  # the clock did not move
    assert decisions[2]["trace"]["state"]["reserved"] == "100"  # s1's open order still counts
    assert decisions[3]["trace"]["state"]["reserved"] == "200"


def test_an_input_stamped_past_the_skew_ahead_of_its_record_is_future_timestamp(tmp_path):
    future = signal("p1", "X", "0.9", "10", 2082758400000)
    future["timestamp"] = T0  # the Kafka record timestamp: when it was really written
    within = signal("p1", "X", "0.9", "10", T0 + 60 * SECOND)
    within["timestamp"] = T0
    path = tmp_path / "j.jsonl"
    path.write_text(journal_text([X, future, within, signal("p1", "X", "0.9", "10", T0 + SECOND)]))
    done = subprocess.run([*_sizer(), "replay", "--journal", str(path), "--preset", "graduated"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        f"{path}:2: FUTURE_TIMESTAMP: ts: {2082758400000 - T0} ms ahead of the record timestamp {T0} "
        f"(max_future_skew_ms=60000)"]
    assert outcomes(json.loads(line) for line in done.stdout.splitlines()) == [("accepted", None)] * 2


# 2. Reservations that vanish while their order is live.

def test_reservations_are_stamped_with_the_clock_and_never_lapse_at_birth(replay):
    decisions = replay(
        [X, signal("p1", "X", "0.9", "10", T0 + 700 * SECOND)] + [signal("p1", "X", "0.9", "10", T0)
                                                                   for _ in range(11)],
        "--preset", "graduated", env={"SIZING_MAX_SIGNAL_AGE_S": "900"})
    assert outcomes(decisions) == [("accepted", None)] * 10 + [("rejected", "EXPOSURE_CAP_REACHED")] * 2
    assert sum(int(d["notional"] or 0) for d in decisions) == 1000  # the 1% cap, never more


def test_a_ttl_shorter_than_the_signal_age_is_refused_at_start_up(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text("")
    done = subprocess.run(
        [*_sizer(), "replay", "--journal", str(path), "--preset", "graduated"], capture_output=True, text=True,
        env={**os.environ, "SIZING_MAX_SIGNAL_AGE_S": "900", "SIZING_RESERVATION_TTL_S": "0.0009"}, check=False)
    assert done.returncode == 2
    assert "reservation_ttl_s" in done.stderr


def test_an_unfilled_order_still_counts_after_ten_minutes(replay):
    a = instrument("A", leg("AUSDT", qty_step="0.01"))
    b = instrument("B", leg("BUSDT", qty_step="0.01"))
    decisions = replay([a, b, signal("p1", "A", "1", "1000", T0), signal("p1", "B", "1", "1000", T0 + 601 * SECOND)],
                       "--preset", "conviction", env={"SIZING_PORTFOLIO_CAP": "1000"})
    assert outcomes(decisions) == [("accepted", None), ("rejected", "EXPOSURE_CAP_REACHED")]
    assert decisions[1]["trace"]["state"]["reserved"] == "1000"


# 3. The same order twice.

def test_a_signal_whose_order_is_open_is_a_duplicate_whatever_the_window(replay):
    decisions = replay([X, Y, signal("p1", "X", "1", "10", T0, signal_id="s1"),
                        signal("p1", "Y", "1", "10", T0, signal_id="s2"),
                        signal("p1", "X", "1", "20", T0 + SECOND, signal_id="s1")],
                       "--preset", "conviction", env={"SIZING_SIGNAL_DEDUPE_WINDOW": "1"})
    assert outcomes(decisions) == [("accepted", None), ("accepted", None), ("rejected", "DUPLICATE_SIGNAL")]
    assert decisions[2]["trace"]["detail"] == f"signal_id=s1 order_id={decisions[0]['order_id']} order=open"
    assert decisions[2]["trace"]["state"]["reserved"] == "2000"


# 4. Marks moved by signals that were never sized.

def test_only_signals_that_passed_the_gates_move_a_mark_and_only_forward(replay):
    decisions = replay([
        X, Y, signal("p1", "X", "1", "100", T0, signal_id="buy"),
    ], "--preset", "conviction")
    order_id = decisions[0]["order_id"]
    decisions = replay([
        X, Y, signal("p1", "X", "1", "100", T0, signal_id="buy"),
        filled("p1", order_id, "X", "10", "100", T0),
        signal("p1", "X", "1", "300", T0 + 400 * SECOND),  # marks X at 300: 3,000 held
        signal("p1", "X", "1", "10", T0 + 50 * SECOND),  # stale: must not re-mark
        signal("p1", "X", "1", "10", T0 + 300 * SECOND),  # fresh but older than the mark: must not re-mark
        signal("p1", "Y", "1", "100", T0 + 401 * SECOND),
    ], "--preset", "conviction", env={"SIZING_EXPOSURE_BASIS": "mark", "SIZING_PORTFOLIO_CAP": "3500"})
    assert outcomes(decisions) == [("accepted", None), ("rejected", "PAIR_CAP_REACHED"),
                                   ("rejected", "STALE_SIGNAL"), ("rejected", "PAIR_CAP_REACHED"),
                                   ("accepted", None)]
    assert decisions[4]["trace"]["state"]["positions"] == "3000"
    assert decisions[4]["notional"] == "500"  # 3,500 cap - 3,000 held


# 5. A pair filled leg by leg counts once.

PAIR = instrument("P", leg("PSPOT", "buy", qty_step="0.01"), leg("PPERP", "sell", qty_step="0.01"))
Q = instrument("Q", leg("QUSDT", qty_step="0.01"))


def leg_fill(order_id, venue, qty, final):
    entry = filled("p1", order_id, "P", qty, "500", T0, final=final)
    entry["value"]["venue_symbol"] = venue
    return entry


def test_a_pair_reported_leg_by_leg_counts_once(replay):
    first = replay([PAIR, signal("p1", "P", "1", "500", T0, signal_id="pair")], "--preset", "conviction")
    order_id = first[0]["order_id"]
    assert first[0]["qty"] == "2" and first[0]["notional"] == "1000"
    decisions = replay([
        PAIR, Q, signal("p1", "P", "1", "500", T0, signal_id="pair"),
        leg_fill(order_id, "PSPOT", "2", True), leg_fill(order_id, "PPERP", "2", True),
        signal("p1", "Q", "1", "100", T0 + SECOND),
    ], "--preset", "conviction", env={"SIZING_PORTFOLIO_CAP": "2500"})
    assert decisions[1]["trace"]["state"]["positions"] == "1000"
    assert decisions[1]["trace"]["state"]["reserved"] == "0"
    assert decisions[1]["notional"] == "1000"


def test_partial_leg_fills_keep_the_unfilled_rest_reserved(replay):
    order_id = replay([PAIR, signal("p1", "P", "1", "500", T0, signal_id="pair")], "--preset", "conviction")[0][
        "order_id"]
    decisions = replay([
        PAIR, Q, signal("p1", "P", "1", "500", T0, signal_id="pair"),
        leg_fill(order_id, "PSPOT", "1", False),
        signal("p1", "Q", "1", "100", T0 + SECOND),
        leg_fill(order_id, "PPERP", "1", False),
        signal("p1", "Q", "1", "100", T0 + 2 * SECOND),
        leg_fill(order_id, "PSPOT", "1", True), leg_fill(order_id, "PPERP", "1", True),
        signal("p1", "Q", "1", "100", T0 + 3 * SECOND),
    ], "--preset", "conviction", env={"SIZING_PORTFOLIO_CAP": "100000", "SIZING_PAIR_CAP_USD": "100000"})
    states = [(d["trace"]["state"]["positions"], d["trace"]["state"]["reserved"]) for d in decisions[1:]]
    # one leg half filled: 500 held, 500 still reserved; the other leg catching up changes nothing
    assert states == [("500", "500"), ("500", "1500"), ("1000", "2000")]


# 6. Orders the product cannot take back, and times and numbers it cannot write.

def test_an_order_outside_the_wire_bounds_is_rejected_never_emitted(replay):
    one = instrument("ONE", leg("ONEUSDT", qty_step="1"))
    decisions = replay([one, signal("p1", "ONE", "1", "1E-13", T0)], "--preset", "conviction")
    assert outcomes(decisions) == [("rejected", "ORDER_OUT_OF_BOUNDS")]
    assert decisions[0]["trace"]["detail"] == "qty=10000000000000000: must be below 1e16 in magnitude"


def test_times_and_numbers_out_of_bounds_are_bad_lines_and_the_replay_goes_on(tmp_path):
    bad = [signal("p1", "X", "0.9", "10", 10 ** 20), signal("p1", "X", "0.9", "10", "10000-01-01T00:00:00Z"),
           signal("p1", "X", "0.9", "1_00", T0), signal("p1", "X", "0.9", "\u0661\u0660\u0660", T0),
           signal("p1", "X", "0.9", "10", "0001-01-01T00:00:00+01:00")]
    path = tmp_path / "j.jsonl"
    path.write_text(journal_text([X, signal("p1", "X", "0.9", "10", T0)] + bad
                                 + [signal("p1", "X", "0.9", "10", "9999-12-31T23:59:59.999Z")])
                    + "[" * 100_000 + "\n")
    done = subprocess.run([*_sizer(), "replay", "--journal", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    errors = done.stderr.splitlines()
    assert [e.split(": ")[1] for e in errors] == ["INVALID_FIELD"] * 5 + ["INVALID_JSON"]
    assert "9999-12-31T23:59:59.999Z" in errors[0] and "1970-01-01T00:00:00Z" in errors[4]
    decisions = [json.loads(line) for line in done.stdout.splitlines()]
    assert outcomes(decisions) == [("accepted", None), ("accepted", None)]


# 7. Exchange rules missing or misnamed.

def test_a_legs_max_notional_caps_the_order_and_the_trace_names_the_clamp(replay):
    capped = instrument("XN", {**leg("XUSDT", qty_step="0.01"), "max_notional": "500"})
    decision, = replay([capped, signal("p1", "XN", "1", "100", T0)], "--preset", "conviction")
    assert decision["notional"] == "500" and decision["qty"] == "5"
    assert decision["trace"]["exchange"] == {"step": "0.01", "qty": "5", "unclamped_qty": "10",
                                             "clamped_by": {"leg": "XUSDT", "rule": "max_notional", "limit": "500"}}


def test_a_max_qty_below_one_step_is_named_on_its_own_leg(replay):
    basis = instrument("BTC-PERP-BASIS", leg("BTCUSDT", qty_step="0.001", min_qty="0.001"),
                       leg("BTCUSDT-PERP", "sell", qty_step="0.001", min_qty="0.001", max_qty="0.0005"))
    decision, = replay([basis, signal("p1", "BTC-PERP-BASIS", "0.9", "50000", T0)], "--preset", "conviction")
    assert decision["reason"] == "BELOW_MIN_QTY"
    assert decision["trace"]["detail"] == \
        "leg=BTCUSDT-PERP max_qty=0.0005 qty_step=0.001 qty=0: no whole step fits under it"


# 8. Phases skipped.

def test_promotion_moves_one_phase_at_a_time(replay):
    closes = [closed("p1", "X", "1", "10", "-10", T0 + i) for i in range(19)]
    closes += [closed("p1", "X", "1", "10", "1", T0 + 19 + i) for i in range(30)]
    decisions = replay([X] + closes + [
        signal("p1", "X", "0.9", "10", T0 + 100),
        closed("p1", "X", "1", "10", "1000", T0 + 101),  # 50 trades, win rate 62%, profit factor 5.4
        signal("p1", "X", "0.9", "10", T0 + 102),
        closed("p1", "X", "1", "10", "1", T0 + 103),
        signal("p1", "X", "0.9", "10", T0 + 104),
    ], "--preset", "graduated")
    assert [d["trace"]["state"]["phase"] for d in decisions] == [1, 2, 3]
    assert decisions[1]["trace"]["base"]["base"] == "252.1"  # 0.25% of 100,840


# 9. Signals without a score.

def test_an_unscored_signal_is_sized_static_under_conviction(replay):
    decisions = replay([X, unscored("p1", "X", "10"), unscored("p1", "X", "10", T0 + 1, score_field=False)],
                       "--preset", "conviction", env={"SIZING_PAIR_CAP_USD": "5000"})
    assert [d["notional"] for d in decisions] == ["1000", "1000"]  # conviction multiplier 1: the per-pair maximum
    assert decisions[0]["trace"]["conviction"] == {"mode": "unscored", "unscored_signals": "static",
                                                   "multiplier": "1"}


def test_an_unscored_signal_is_rejected_under_graduated(replay):
    decision, = replay([X, unscored("p1", "X", "10")], "--preset", "graduated")
    assert decision["reason"] == "NO_SCORE"
    assert decision["trace"]["conviction"] == {"mode": "unscored", "unscored_signals": "reject"}


def test_cancels_release_and_unknown_cancels_change_nothing(replay):
    order_id = replay([X, signal("p1", "X", "1", "10", T0, signal_id="s1")], "--preset", "conviction")[0]["order_id"]
    decisions = replay([X, Y, signal("p1", "X", "1", "10", T0, signal_id="s1"),
                        canceled("p1", "o-unknown", T0 + 999 * SECOND), signal("p1", "Y", "1", "10", T0 + SECOND),
                        canceled("p1", order_id, T0 + 2 * SECOND), signal("p1", "Y", "1", "10", T0 + 3 * SECOND)],
                       "--preset", "conviction", env={"SIZING_PAIR_CAP_USD": "5000"})
    # the cancel of an unknown order moved no clock: the signal 1 s after T0 is not stale
    assert outcomes(decisions)[1] == ("accepted", None)
    assert [d["trace"]["state"]["reserved"] for d in decisions[1:]] == ["1000", "1000"]


# Found by trying to break the above (same kinds).

def test_leg_fills_that_arrive_after_a_cancel_still_count_once(replay):
    order_id = replay([PAIR, signal("p1", "P", "1", "500", T0, signal_id="pair")], "--preset", "conviction")[0][
        "order_id"]
    decisions = replay([PAIR, Q, signal("p1", "P", "1", "500", T0, signal_id="pair"), canceled("p1", order_id, T0),
                        leg_fill(order_id, "PSPOT", "2", True), leg_fill(order_id, "PPERP", "2", True),
                        signal("p1", "Q", "1", "100", T0 + SECOND)],
                       "--preset", "conviction", env={"SIZING_PORTFOLIO_CAP": "2500"})
    assert decisions[1]["trace"]["state"]["positions"] == "1000"
    assert decisions[1]["notional"] == "1000"


def test_a_fill_naming_its_venue_symbol_is_booked_on_its_orders_symbol(replay):
    order_id = replay([X, signal("p1", "X", "1", "10", T0, signal_id="s1")], "--preset", "conviction")[0]["order_id"]
    decisions = replay([X, signal("p1", "X", "1", "10", T0, signal_id="s1"),
                        filled("p1", order_id, "XUSDT", "100", "10", T0),
                        signal("p1", "X", "1", "10", T0 + SECOND)], "--preset", "conviction")
    assert decisions[1]["reason"] == "PAIR_CAP_REACHED"
    assert decisions[1]["trace"]["caps"]["pair_exposure"] == "1000"


def test_a_resent_signal_of_an_order_that_ended_is_a_duplicate_not_a_second_order(replay):
    order_id = replay([X, signal("p1", "X", "1", "10", T0, signal_id="s1")], "--preset", "conviction")[0]["order_id"]
    decisions = replay([X, Y, signal("p1", "X", "1", "10", T0, signal_id="s1"),
                        filled("p1", order_id, "X", "100", "10", T0, final=False),  # filled to its quantity
                        signal("p1", "Y", "1", "10", T0, signal_id="s2"),
                        signal("p1", "X", "1", "10", T0 + SECOND, signal_id="s1")],
                       "--preset", "conviction", env={"SIZING_SIGNAL_DEDUPE_WINDOW": "1"})
    assert outcomes(decisions)[2] == ("rejected", "DUPLICATE_SIGNAL")
    assert decisions[2]["trace"]["detail"].endswith("order=ended")


def test_numbers_past_what_a_decimal_holds_and_ids_with_control_characters_are_bad_lines(tmp_path):
    path = tmp_path / "j.jsonl"
    huge = journal_text([signal("p1", "X", "1", "10", T0)]).replace('"price": "10"', '"price": 1e1000000000000000000')
    collide = signal("a\u001fb", "X", "1", "10", T0, signal_id="c")
    path.write_text(journal_text([X, signal("p1", "X", "1", "10", T0)]) + huge + "1e-99999999999999999999\n"
                    + journal_text([collide, signal("a", "X", "1", "10", T0, signal_id="b\u001fc")]))
    done = subprocess.run([*_sizer(), "replay", "--journal", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert [line.split(": ")[1] for line in done.stderr.splitlines()] == [
        "INVALID_JSON", "INVALID_JSON", "INVALID_FIELD", "INVALID_FIELD"]
    assert len(done.stdout.splitlines()) == 1
