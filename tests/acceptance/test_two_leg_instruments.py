"""A spot+perp pair gets one quantity valid on both legs, or a rejection; never one leg alone."""

from decimal import Decimal

from tests.builders import T0, instrument, leg, signal

PAIR = instrument(
    "ETH-BASIS",
    leg("ETHUSDT", "buy", qty_step="0.004", min_qty="0.008", min_notional="5"),
    leg("ETHUSDT-PERP", "sell", qty_step="0.006", min_qty="0.03", max_qty="0.5", min_notional="20"),
)


def test_both_legs_get_one_quantity_that_is_a_multiple_of_every_step(replay):
    [decision] = replay([PAIR, signal("p1", "ETH-BASIS", "0.9", "1000", T0, side="sell")], "--preset", "conviction")

    qty = Decimal(decision["qty"])
    # budget 930 / 1000 = 0.93 -> common step lcm(0.004, 0.006) = 0.012 -> 0.924 -> clamped to max 0.5 -> 0.492
    assert decision["trace"]["exchange"]["step"] == "0.012"
    assert qty == Decimal("0.492")
    assert qty % Decimal("0.004") == 0 and qty % Decimal("0.006") == 0


def test_order_legs_carry_the_same_quantity_with_sides_relative_to_the_order(replay, tmp_path):
    import json
    import subprocess
    import sys

    from tests.builders import journal_text

    path = tmp_path / "j.jsonl"
    path.write_text(journal_text([PAIR, signal("p1", "ETH-BASIS", "0.5", "1000", T0, side="sell")]))
    code = ("import sys,json;from streams.history.replay import replay;from streams.config import load_config;"
            "from streams.wire.models import to_json;"
            "replay(open(sys.argv[1]),load_config('conviction'),lambda d,o:print(to_json(o)),lambda n,r:None)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True).stdout
    order = json.loads(out)
    assert order["side"] == "sell"
    assert order["legs"] == [
        {"venue_symbol": "ETHUSDT", "side": "sell", "qty": order["qty"], "kind": "spot", "contract_size": "1"},
        {"venue_symbol": "ETHUSDT-PERP", "side": "buy", "qty": order["qty"], "kind": "spot", "contract_size": "1"},
    ]


def test_a_budget_below_one_legs_minimum_rejects_the_whole_order(replay):
    # 0.65 * 1000 / 2000 = 0.325 -> 0.324 on the common step, fine; at 40000 it is 0.016 < perp min 0.03
    [decision] = replay([PAIR, signal("p1", "ETH-BASIS", "0.5", "40000", T0)], "--preset", "conviction")

    assert decision["outcome"] == "rejected"
    assert decision["reason"] == "BELOW_MIN_QTY"
    assert decision["trace"]["detail"].startswith("leg=ETHUSDT-PERP")
    assert decision["order_id"] is None and decision["qty"] is None


def test_a_leg_minimum_notional_rejects_the_whole_order(replay):
    small = instrument("SMALL", leg("A", qty_step="1", min_notional="1"), leg("B", qty_step="1", min_notional="700"))
    [decision] = replay([small, signal("p1", "SMALL", "0.3", "100", T0)], "--preset", "conviction")

    # 510 / 100 -> 5 units -> 500 notional < 700 on leg B
    assert decision["reason"] == "BELOW_MIN_NOTIONAL"
    assert decision["trace"]["detail"] == "leg=B notional=500 min_notional=700"
