"""The documented figures of graduated scaling, through `sizer replay --preset graduated`:
starting equity $100,000, phase 1 = 0.1%, tiers, drawdown halving, promotion, 1% cap with skip."""

from tests.builders import T0, closed, instrument, leg, signal

ETH = instrument("ETH-USD", leg("ETHUSDT", qty_step="0.01", min_qty="0.01"))


def sized(decision):
    return decision["notional"] if decision["outcome"] == "accepted" else decision["reason"]


def test_tiers_give_100_75_and_low_confidence(replay):
    decisions = replay(
        [ETH, signal("p1", "ETH-USD", "0.9", "10", T0), signal("p2", "ETH-USD", "0.7", "10", T0),
         signal("p3", "ETH-USD", "0.5", "10", T0)],
        "--preset", "graduated",
    )
    assert [sized(d) for d in decisions] == ["100", "75", "LOW_CONFIDENCE"]
    assert decisions[0]["trace"]["base"] == {"mode": "graduated", "phase": 1, "equity_pct": "0.001", "base": "100"}
    assert decisions[1]["trace"]["conviction"]["multiplier"] == "0.75"


def test_two_losing_closes_halve_and_two_wins_restore(replay):
    entries = [ETH, closed("p1", "ETH-USD", "1", "10", "-5", T0), closed("p1", "ETH-USD", "1", "10", "-5", T0 + 1),
               signal("p1", "ETH-USD", "0.9", "10", T0 + 2),
               closed("p1", "ETH-USD", "1", "10", "7", T0 + 3), closed("p1", "ETH-USD", "1", "10", "3", T0 + 4),
               signal("p1", "ETH-USD", "0.9", "10", T0 + 5)]
    halved, restored = replay(entries, "--preset", "graduated")

    assert halved["trace"]["state"]["drawdown"] is True
    assert halved["trace"]["drawdown_multiplier"] == "0.5"
    # equity 99990 * 0.1% * 1.0 * 0.5 = 49.995, at price 10 on a 0.01 step -> 4.99
    assert halved["trace"]["budget"] == "49.995"
    assert halved["notional"] == "49.9"
    assert restored["trace"]["state"]["drawdown"] is False
    assert restored["trace"]["state"]["equity"] == "100000"
    assert restored["notional"] == "100"


def _closes(wins: int, losses: int, start: int):
    """Alternating closes (W W L ...) so that no two losses run together."""
    entries, ts = [], start
    pattern = []
    w, l = wins, losses
    while w or l:
        if w:
            pattern.append("10"); w -= 1
        if w and l:
            pattern.append("10"); w -= 1
        if l:
            pattern.append("-5"); l -= 1
    for pnl in pattern:
        entries.append(closed("p1", "ETH-USD", "1", "10", pnl, ts)); ts += 1
    return entries, ts


def test_phase_two_after_twenty_good_trades_and_phase_three_after_fifty(replay):
    first_19, ts = _closes(11, 8, T0)
    twentieth = closed("p1", "ETH-USD", "1", "10", "10", ts)
    next_30, ts2 = _closes(18, 12, ts + 10)
    entries = [ETH, *first_19, signal("p1", "ETH-USD", "0.9", "10", ts - 1), twentieth,
               signal("p1", "ETH-USD", "0.9", "10", ts + 1), *next_30,
               signal("p1", "ETH-USD", "0.9", "10", ts2)]
    at_19, at_20, at_50 = replay(entries, "--preset", "graduated")

    assert at_19["trace"]["state"]["closed_trades"] == 19
    assert at_19["trace"]["base"]["phase"] == 1
    # 12 wins of 10, 8 losses of 5: win rate 60% > 55%, profit factor 3 > 1.2
    assert at_20["trace"]["state"]["closed_trades"] == 20
    assert at_20["trace"]["base"]["phase"] == 2
    assert at_20["trace"]["state"]["equity"] == "100080"
    assert at_20["trace"]["base"]["base"] == "250.2"  # 0.25% of 100080
    # 30 wins, 20 losses: win rate 60% > 58%, profit factor 3 > 1.5
    assert at_50["trace"]["state"]["closed_trades"] == 50
    assert at_50["trace"]["base"]["phase"] == 3
    assert at_50["trace"]["state"]["equity"] == "100200"
    assert at_50["trace"]["base"]["base"] == "501"  # 0.5% of 100200


def test_no_promotion_when_the_win_rate_is_not_above_threshold(replay):
    closes, ts = _closes(11, 9, T0)  # 55% is not > 55%
    [decision] = replay([ETH, *closes, signal("p1", "ETH-USD", "0.9", "10", ts)], "--preset", "graduated")
    assert decision["trace"]["state"]["closed_trades"] == 20
    assert decision["trace"]["base"]["phase"] == 1


def test_one_percent_cap_skips_a_signal_whose_budget_exceeds_what_remains(replay):
    entries = [ETH] + [signal("p1", "ETH-USD", "0.9", "10", T0 + i) for i in range(9)]  # 900
    entries += [signal("p1", "ETH-USD", "0.7", "10", T0 + 9)]  # 75 -> 975
    entries += [signal("p1", "ETH-USD", "0.9", "10", T0 + 10)]  # 100 wanted, 25 remain
    decisions = replay(entries, "--preset", "graduated")

    assert [sized(d) for d in decisions[:10]] == ["100"] * 9 + ["75"]
    skipped = decisions[10]
    assert skipped["reason"] == "EXPOSURE_CAP_REACHED"
    assert skipped["trace"]["caps"]["portfolio_cap"] == "1000"
    assert skipped["trace"]["caps"]["remaining"] == "25"
