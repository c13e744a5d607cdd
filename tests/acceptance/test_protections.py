"""The protections through the real `sizer replay` and `sizer sweep`: journals that
combine them with halts, equity adjustments, leg fills and reservations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from streams.engine import order_id_for
from tests.builders import T0, closed, control, filled, instrument, journal_text, leg, reduce, signal

SIZER = str(Path(sys.executable).with_name("sizer"))
MIN = 60_000
ETH = instrument("ETH", leg("ETHUSDT", qty_step="0.001", min_qty="0.001", min_notional="5"), group="L1")
SOL = instrument("SOL", leg("SOLUSDT", qty_step="0.01", min_qty="0.01", min_notional="5"), group="L1")
BASIS = instrument("BTC-BASIS", leg("BTCUSDT", "buy", qty_step="0.001"), leg("BTCUSDT-PERP", "sell", qty_step="0.001"),
                   group="BTC")


def said(decisions):
    return [(d["reason"] or d["notional"]) for d in decisions]


def test_a_desks_exit_is_sized_when_its_entry_filled_the_portfolio_cap(replay):
    decisions = replay([ETH, signal("p1", "ETH", "1", "2000", signal_id="in"),
                        filled("p1", order_id_for("p1", "in"), "ETH", "0.5", "2000", ts=T0 + 1),
                        reduce("p1", "ETH", "2100", "sell", ts=T0 + 2, signal_id="out")],
                       env={"SIZING_PORTFOLIO_CAP": "1000"})
    assert said(decisions) == ["1000", "1050"]
    exit_ = decisions[1]
    assert exit_["trace"]["reduce"] == {"held_qty": "0.5", "position_side": "buy", "reduce_fraction": "1",
                                        "qty": "0.5"}
    assert "caps" not in exit_["trace"]


def test_protections_combined_with_halts_equity_adjustments_leg_fills_and_reservations(replay, tmp_path):
    config = tmp_path / "desk.toml"
    config.write_text(
        'preset = "conviction"\npair_cap_usd = 5000\n'
        'cooldown_after_loss_s = 1800\n'
        'loss_guard_count = 2\nloss_guard_window_s = 3600\nloss_guard_pause_s = 600\n'
        'max_orders_per_window = 3\norder_rate_window_s = 60\n'
        '[group_caps]\nL1 = "1500"\nBTC = "2%"\n'
        '[portfolios."desk-b"]\ncooldown_after_loss_s = 60\n')
    basis_order = order_id_for("desk-a", "b1")
    entries = [
        ETH, SOL, BASIS,
        signal("desk-a", "ETH", "1", "100", T0, signal_id="e1"),  # 1000 (L1: 1000 of 1500)
        signal("desk-a", "SOL", "1", "100", T0 + 1000, signal_id="s1"),  # shrunk to L1's 500
        signal("desk-a", "SOL", "1", "100", T0 + 2000, signal_id="s2"),  # L1 full (a rejection is no order)
        signal("desk-a", "BTC-BASIS", "1", "100", T0 + 3000, signal_id="b1"),  # 1000 (BTC: 2% of 100,000)
        signal("desk-a", "BTC-BASIS", "1", "100", T0 + 4000, signal_id="b2"),  # 3 opens in 60 s: rate
        # one leg of the basis fills, then the other: one position, the reservation gone
        {**filled("desk-a", basis_order, "BTC-BASIS", "10", "100", ts=T0 + 5000), "value": {
            **filled("desk-a", basis_order, "BTC-BASIS", "10", "100", ts=T0 + 5000)["value"],
            "venue_symbol": "BTCUSDT"}},
        {**filled("desk-a", basis_order, "BTC-BASIS", "10", "100", ts=T0 + 5000), "value": {
            **filled("desk-a", basis_order, "BTC-BASIS", "10", "100", ts=T0 + 5000)["value"],
            "venue_symbol": "BTCUSDT-PERP"}},
        closed("desk-a", "ETH", "1", "90", "-10", ts=T0 + MIN),  # a loss: ETH cools down 30 min
        signal("desk-a", "ETH", "1", "100", T0 + 2 * MIN, signal_id="e2"),  # COOLDOWN
        control("desk-a", "halt", ts=T0 + 2 * MIN),
        reduce("desk-a", "BTC-BASIS", "100", "sell", ts=T0 + 3 * MIN, signal_id="x1"),  # a full halt stops it
        control("desk-a", "resume", ts=T0 + 3 * MIN),
        control("desk-a", "adjust_equity", ts=T0 + 3 * MIN, amount="-50000"),  # BTC's 2% is now 1000: full
        signal("desk-a", "BTC-BASIS", "1", "100", T0 + 4 * MIN, signal_id="b3"),  # GROUP_CAP_REACHED
        reduce("desk-a", "BTC-BASIS", "100", "sell", fraction="0.25", ts=T0 + 5 * MIN, signal_id="x2"),
        closed("desk-a", "SOL", "1", "90", "-10", ts=T0 + 6 * MIN),  # the second loss in the hour: paused
        signal("desk-a", "BTC-BASIS", "1", "100", T0 + 7 * MIN, signal_id="b4"),  # LOSS_GUARD
        reduce("desk-a", "ETH", "100", "buy", ts=T0 + 7 * MIN, signal_id="x3"),  # nothing held in ETH
        signal("desk-b", "ETH", "1", "100", T0, signal_id="e1"),
        closed("desk-b", "ETH", "1", "90", "-10", ts=T0 + MIN),
        signal("desk-b", "ETH", "0.5", "100", T0 + MIN + 59_000, signal_id="e2"),  # desk-b cools 60 s
        signal("desk-b", "ETH", "0.5", "100", T0 + 2 * MIN, signal_id="e3"),  # 650 shrunk to L1's 500
    ]
    decisions = replay(entries, "--config", str(config))
    assert said(decisions) == [
        "1000", "500", "GROUP_CAP_REACHED", "1000", "RATE_LIMITED", "COOLDOWN", "HALTED", "GROUP_CAP_REACHED",
        "250", "LOSS_GUARD", "NOTHING_TO_REDUCE",
        "1000", "COOLDOWN", "500",
    ]
    by_id = {(d["portfolio_id"], d["signal_id"]): d for d in decisions}
    assert by_id[("desk-a", "s1")]["trace"]["caps"]["bound_by"] == "GROUP_CAP_REACHED"
    assert by_id[("desk-a", "x2")]["qty"] == "2.5"  # a quarter of the 10 held, no cap read
    assert by_id[("desk-a", "b4")]["trace"]["detail"].startswith("paused_until=2026-01-01T00:16:00.000Z")
    assert by_id[("desk-a", "b3")]["trace"]["caps"]["group_cap"] == "999.8"  # 2% of 99,990 - 50,000
    hashes = {d["portfolio_id"]: d["config_hash"] for d in decisions}
    assert hashes["desk-a"] != hashes["desk-b"]


def test_a_sweep_answers_what_a_cooldown_would_have_done(tmp_path):
    entries = [ETH]
    for i in range(6):  # a losing trade every ten minutes
        sid = f"s{i}"
        ts = T0 + i * 10 * MIN
        entries += [signal("p1", "ETH", "1", "100", ts, signal_id=sid),
                    filled("p1", order_id_for("p1", sid), "ETH", "10", "100", ts=ts + 1000),
                    closed("p1", "ETH", "10", "99", "-10", ts=ts + 2000)]
    path = tmp_path / "journal.jsonl"
    path.write_text(journal_text(entries))
    done = subprocess.run([SIZER, "sweep", "--journal", str(path), "--json", "--preset", "conviction",
                           "--set", "cooldown_after_loss_s=1,1800"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    rows = {row["label"]: row for row in json.loads(done.stdout)["configurations"]}
    short, long_ = rows["conviction cooldown_after_loss_s=1"], rows["conviction cooldown_after_loss_s=1800"]
    assert short["accepted"] == 6
    assert long_["accepted"] == 2  # at 0 and at 40 min: each loss cools the next three signals down
