"""The documented figures of conviction scaling, through `sizer replay --preset conviction`:
per-pair max $1000, fractions 0.3-1.0, portfolio cap $5000, shrink."""

from tests.builders import T0, canceled, instrument, leg, signal

BTC = instrument("BTC-USD", leg("BTCUSDT", qty_step="0.001", min_qty="0.001", min_notional="5"))
# Five markets at price 100 with a fine step, so budgets convert to exact quantities.
MARKETS = [instrument(f"M{i}", leg(f"M{i}USDT", qty_step="0.001")) for i in range(1, 8)]


def test_score_0_9_gives_a_930_budget_rounded_down_to_the_step(replay):
    [decision] = replay([BTC, signal("p1", "BTC-USD", "0.9", "50000")], "--preset", "conviction")

    assert decision["outcome"] == "accepted"
    assert decision["trace"]["conviction"]["fraction"] == "0.93"
    assert decision["trace"]["budget"] == "930"
    # 930 / 50000 = 0.0186 -> rounded down to the 0.001 step
    assert decision["qty"] == "0.018"
    assert decision["notional"] == "900"


def test_score_0_3_gives_a_510_budget(replay):
    [decision] = replay([BTC, signal("p1", "BTC-USD", "0.3", "50000")], "--preset", "conviction")

    assert decision["trace"]["budget"] == "510"
    assert decision["qty"] == "0.01"  # 510 / 50000 = 0.0102 -> 0.010
    assert decision["notional"] == "500"


def test_signal_at_the_portfolio_cap_is_rejected(replay):
    full = [signal("p1", f"M{i}", "1", "100", ts=T0 + i) for i in range(1, 6)]
    decisions = replay([*MARKETS, *full, signal("p1", "M6", "1", "100", ts=T0 + 6)], "--preset", "conviction")

    assert [d["notional"] for d in decisions[:5]] == ["1000"] * 5
    last = decisions[5]
    assert last["outcome"] == "rejected"
    assert last["reason"] == "EXPOSURE_CAP_REACHED"
    assert last["trace"]["state"]["exposure"] == "5000"
    assert last["trace"]["caps"]["remaining"] == "0"


def test_signal_that_would_overshoot_the_cap_is_shrunk_to_what_remains(replay):
    entries = [*MARKETS]
    entries += [signal("p1", f"M{i}", "1", "100", ts=T0 + i) for i in range(1, 5)]  # 4000
    entries += [signal("p1", "M5", "0.3", "100", ts=T0 + 5)]  # 510 -> 4510
    entries += [signal("p1", "M6", "0.9", "100", ts=T0 + 6)]  # 930 wanted, 490 remain
    decisions = replay(entries, "--preset", "conviction")

    shrunk = decisions[5]
    assert shrunk["outcome"] == "accepted"
    assert shrunk["trace"]["budget"] == "930"
    assert shrunk["trace"]["caps"]["remaining"] == "490"
    assert shrunk["trace"]["caps"]["capped_budget"] == "490"
    assert shrunk["qty"] == "4.9"
    assert shrunk["notional"] == "490"


def test_a_cancel_frees_its_reservation_for_the_next_signal(replay):
    entries = [*MARKETS] + [signal("p1", f"M{i}", "1", "100", ts=T0 + i) for i in range(1, 6)]
    before = replay([*entries, signal("p1", "M6", "1", "100", ts=T0 + 6)], "--preset", "conviction")
    assert before[5]["reason"] == "EXPOSURE_CAP_REACHED"

    order_id = before[2]["order_id"]
    after = replay(
        [*entries, canceled("p1", order_id, ts=T0 + 6), signal("p1", "M6", "1", "100", ts=T0 + 7)],
        "--preset", "conviction",
    )
    assert after[5]["outcome"] == "accepted"
    assert after[5]["notional"] == "1000"
    assert after[5]["trace"]["state"]["reserved"] == "4000"


def test_second_signal_on_a_pair_is_held_to_the_pair_cap(replay):
    decisions = replay(
        [MARKETS[0], signal("p1", "M1", "0.9", "100", ts=T0), signal("p1", "M1", "0.9", "100", ts=T0 + 1)],
        "--preset", "conviction",
    )
    assert decisions[0]["notional"] == "930"
    assert decisions[1]["trace"]["caps"]["pair_remaining"] == "70"
    assert decisions[1]["notional"] == "70"
