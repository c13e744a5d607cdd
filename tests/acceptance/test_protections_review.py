"""The protections and per-portfolio settings against inputs their first tests did not
try: portfolio tables that only together make an invalid configuration, an instrument
that changes its group, the whole exit of a pair with an inverse leg, losing closes
that arrive out of event-time order. Each through the real `sizer` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streams.engine import order_id_for
from tests.builders import T0, closed, filled, instrument, leg, reduce, signal

SIZER = str(Path(sys.executable).with_name("sizer"))
SECOND = 1000


def said(decisions):
    return [(d["signal_id"], d["reason"] or d["notional"]) for d in decisions]


# Per-portfolio settings

def test_two_glob_tables_that_are_invalid_only_together_stop_start_up(tmp_path):
    """"a*" and "*b" each make a valid configuration, but a portfolio "ab" takes both:
    a reservation TTL of 400 under a signal age of 400 + the skew breaks a clock rule. Start-up
    refuses, naming both tables and the rule; it never reaches the first signal."""
    config = tmp_path / "desks.toml"
    config.write_text('preset = "conviction"\n[portfolios."a*"]\nreservation_ttl_s = 400\n'
                      '[portfolios."*b"]\nmax_signal_age_s = 400\n')
    done = subprocess.run([SIZER, "config", "--config", str(config)], capture_output=True, text=True, check=False)
    assert done.returncode != 0, done.stdout
    assert "portfolios.a*" in done.stderr and "portfolios.*b" in done.stderr, done.stderr
    assert "reservation_ttl_s (400) must be unset or at least max_signal_age_s + max_future_skew_s" in done.stderr, \
        done.stderr
    assert "Traceback" not in done.stderr


def test_a_glob_table_invalid_on_its_own_stops_start_up_though_its_example_id_matches_a_table_that_mends_it(
        tmp_path):
    """"a*" sets a reservation TTL under the preset's signal age + skew; "ax" also takes
    "*x", which lowers the age so the TTL is enough, but "ab" takes "a*" alone."""
    config = tmp_path / "desks.toml"
    config.write_text('preset = "conviction"\n[portfolios."a*"]\nreservation_ttl_s = 150\n'
                      '[portfolios."*x"]\nmax_signal_age_s = 60\n')
    done = subprocess.run([SIZER, "config", "--config", str(config)], capture_output=True, text=True, check=False)
    assert done.returncode != 0, done.stdout
    assert "portfolios.a* (as for portfolio 'a')" in done.stderr, done.stderr
    assert "reservation_ttl_s (150) must be unset or at least max_signal_age_s + max_future_skew_s" in done.stderr, \
        done.stderr


def test_a_table_that_matches_no_portfolio_id_stops_start_up(tmp_path):
    config = tmp_path / "desks.toml"
    config.write_text('preset = "conviction"\n[portfolios.""]\ncap_mode = "skip"\n')
    done = subprocess.run([SIZER, "config", "--config", str(config)], capture_output=True, text=True, check=False)
    assert done.returncode != 0, done.stdout
    assert "portfolios.'': matches no portfolio id" in done.stderr, done.stderr


def test_glob_tables_that_never_match_one_id_together_are_each_checked_alone(tmp_path):
    config = tmp_path / "desks.toml"
    config.write_text('preset = "conviction"\n[portfolios."a-*"]\nmax_signal_age_s = 100\n'
                      '[portfolios."b-*"]\nreservation_ttl_s = 200\nmax_signal_age_s = 100\n'
                      '[portfolios."a-[!x]?"]\nreservation_ttl_s = 400\n')
    done = subprocess.run([SIZER, "config", "--config", str(config)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


# Group caps

def test_a_position_counts_in_the_group_its_instrument_was_last_sized_in(replay):
    """X is republished from group G into H; an H order on X fills, and the whole X
    position is H's: a Y signal in H finds the cap full, not empty."""
    entries = [instrument("X", leg("XUSDT", qty_step="0.01"), group="G"),
               instrument("Y", leg("YUSDT", qty_step="0.01"), group="H"),
               signal("p1", "X", "0", "100", signal_id="a"),  # 300, in G
               filled("p1", order_id_for("p1", "a"), "X", "3", "100", ts=T0 + 1),
               instrument("X", leg("XUSDT", qty_step="0.01"), group="H"),
               signal("p1", "X", "1", "100", ts=T0 + 2, signal_id="b"),  # 700 under the pair cap, in H
               filled("p1", order_id_for("p1", "b"), "X", "7", "100", ts=T0 + 3),
               signal("p1", "Y", "1", "100", ts=T0 + 4, signal_id="c")]
    decisions = replay(entries, env={"SIZING_GROUP_CAPS": '{"H": "1300"}', "SIZING_PORTFOLIO_CAP": "10000"})
    assert said(decisions) == [("a", "300"), ("b", "700"), ("c", "300")]
    assert decisions[2]["trace"]["caps"]["group_exposure"] == "1000"


# Reduce signals

def test_the_whole_exit_of_a_pair_whose_inverse_leg_rounds_to_no_contract_is_never_one_legged(replay):
    """0.001 base at 50,000 is half a 100 USD contract: the spot leg would sell 0.001
    and the perp leg buy 0 contracts. Never a one-legged order: the exit is refused,
    naming the leg."""
    pair = instrument("INV", leg("ISPOT", "buy", qty_step="0.001"),
                      {**leg("IPERP", "sell", qty_step="1", min_qty="1"), "kind": "inverse", "contract_size": "100"})
    entries = [pair, signal("p1", "INV", "1", "50000", signal_id="in"),
               filled("p1", order_id_for("p1", "in"), "INV", "0.02", "50000", ts=T0 + 1),
               closed("p1", "INV", "0.019", "50000", "0", ts=T0 + 2),
               reduce("p1", "INV", "50000", "sell", ts=T0 + 3, signal_id="out")]
    decisions = replay(entries)
    exit_ = decisions[1]
    assert exit_["outcome"] == "rejected", exit_
    assert exit_["reason"] == "BELOW_MIN_QTY"
    assert "leg=IPERP qty=0" in exit_["trace"]["detail"]


# Loss guard

def test_losing_closes_further_apart_than_the_window_never_trip_the_loss_guard_whatever_their_order(replay):
    """Two losses 100 s apart with a 60 s window: not two losses within the window,
    whether the earlier one arrives first or last."""
    eth = instrument("ETH", leg("ETHUSDT", qty_step="0.001"))
    guard = {"SIZING_LOSS_GUARD_COUNT": "2", "SIZING_LOSS_GUARD_WINDOW_S": "60", "SIZING_LOSS_GUARD_PAUSE_S": "600"}
    in_order = [eth, closed("p1", "ETH", "1", "90", "-10", ts=T0), closed("p1", "ETH", "1", "90", "-10", ts=T0 + 100 * SECOND),
                signal("p1", "ETH", "1", "100", ts=T0 + 101 * SECOND, signal_id="s")]
    late = [eth, closed("p1", "ETH", "1", "90", "-10", ts=T0 + 100 * SECOND), closed("p1", "ETH", "1", "90", "-10", ts=T0),
            signal("p1", "ETH", "1", "100", ts=T0 + 101 * SECOND, signal_id="s")]
    near = [eth, closed("p1", "ETH", "1", "90", "-10", ts=T0 + 100 * SECOND),
            closed("p1", "ETH", "1", "90", "-10", ts=T0 + 50 * SECOND),  # late, 50 s before: within the window
            signal("p1", "ETH", "1", "100", ts=T0 + 101 * SECOND, signal_id="s")]
    assert said(replay(in_order, env=guard)) == [("s", "1000")]
    assert said(replay(late, env=guard)) == [("s", "1000")]
    assert said(replay(near, env=guard)) == [("s", "LOSS_GUARD")]



# Boundaries

def test_a_cooldown_or_order_rate_window_with_a_fraction_of_a_millisecond_holds_to_its_last_whole_millisecond(
        replay):
    """1800.0005 s after a losing close the clock (in whole ms) is 1,800,000 ms past it,
    still before the cooldown's end; an open 60,000 ms after another is inside a
    60.0005 s window. The settings are never cut short to the millisecond below."""
    eth = instrument("ETH", leg("ETHUSDT", qty_step="0.001"))
    cooling = [eth, closed("p1", "ETH", "1", "90", "-10", ts=T0),
               signal("p1", "ETH", "1", "100", ts=T0 + 1_800_000, signal_id="at"),
               signal("p1", "ETH", "1", "100", ts=T0 + 1_800_001, signal_id="after")]
    assert said(replay(cooling, env={"SIZING_COOLDOWN_AFTER_LOSS_S": "1800.0005"})) == [
        ("at", "COOLDOWN"), ("after", "1000")]
    rate = [eth, signal("p1", "ETH", "0", "100", ts=T0, signal_id="one"),
            signal("p1", "ETH", "0", "100", ts=T0 + 60_000, signal_id="at"),
            signal("p1", "ETH", "0", "100", ts=T0 + 60_001, signal_id="after")]
    assert said(replay(rate, env={"SIZING_MAX_ORDERS_PER_WINDOW": "1", "SIZING_ORDER_RATE_WINDOW_S": "60.0005"})) == [
        ("one", "300"), ("at", "RATE_LIMITED"), ("after", "300")]


def test_the_trace_counts_the_losses_inside_the_loss_guard_window_at_the_clock_not_every_loss_kept(replay):
    eth = instrument("ETH", leg("ETHUSDT", qty_step="0.001"))
    guard = {"SIZING_LOSS_GUARD_COUNT": "3", "SIZING_LOSS_GUARD_WINDOW_S": "60", "SIZING_LOSS_GUARD_PAUSE_S": "60"}
    entries = [eth, closed("p1", "ETH", "1", "90", "-10", ts=T0),
               signal("p1", "ETH", "1", "100", ts=T0 + 59_999, signal_id="inside"),
               signal("p1", "ETH", "0", "100", ts=T0 + 2 * 3_600_000, signal_id="hours-later")]
    inside, later = replay(entries, env=guard)
    assert inside["trace"]["protections"]["loss_guard"]["losses_in_window"] == 1
    assert later["trace"]["protections"]["loss_guard"]["losses_in_window"] == 0


def test_a_reduce_of_a_pair_exits_no_more_on_either_leg_than_that_leg_holds(replay):
    """The spot leg of a basis pair filled 10, the perp leg 4 so far: the position is 10
    (the largest leg, as the cap measures it), but an exit of 10 on the perp leg would
    buy 6 it never sold. A reduce exits what every leg holds: 4 (whole), 2 (half)."""
    basis = instrument("BASIS", leg("BS", "buy", qty_step="0.001"), leg("BP", "sell", qty_step="0.001"))
    order = order_id_for("p1", "in")
    spot, perp = (filled("p1", order, "BASIS", qty, "100", ts=T0 + 1, final=False) for qty in ("10", "4"))
    spot["value"]["venue_symbol"], perp["value"]["venue_symbol"] = "BS", "BP"
    entries = [basis, signal("p1", "BASIS", "1", "100", signal_id="in"), spot, perp,
               reduce("p1", "BASIS", "100", "sell", fraction="0.5", ts=T0 + 2, signal_id="half"),
               reduce("p1", "BASIS", "100", "sell", ts=T0 + 3, signal_id="whole"),
               closed("p1", "BASIS", "4", "100", "0", ts=T0 + 4),
               reduce("p1", "BASIS", "100", "sell", ts=T0 + 5, signal_id="rest")]
    decisions = replay(entries)
    assert said(decisions) == [("in", "1000"), ("half", "200"), ("whole", "400"), ("rest", "NOTHING_TO_REDUCE")]
    assert decisions[2]["trace"]["reduce"]["legs_held"] == {"BS": "10", "BP": "4"}
