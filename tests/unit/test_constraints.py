from decimal import Decimal as D
from decimal import localcontext

from streams.wire.decimals import ENGINE_CONTEXT

from hypothesis import given
from hypothesis import strategies as st

from streams.engine.constraints import common_step, fit_to_legs
from streams.wire.models import Leg


def make_leg(step, min_qty="0", max_qty=None, min_notional="0", name="L"):
    return Leg(venue_symbol=name, side="buy", qty_step=D(step), min_qty=D(min_qty),
               max_qty=None if max_qty is None else D(max_qty), min_notional=D(min_notional))


def test_common_step_is_the_least_common_multiple():
    assert common_step((D("0.004"), D("0.006"))) == D("0.012")
    assert common_step((D("0.001"), D("0.01"))) == D("0.01")
    assert common_step((D("0.5"), D("2"))) == D("2")


def test_quantity_is_rounded_down_never_up():
    fit = fit_to_legs(D("930"), D("50000"), (make_leg("0.001"),))
    assert fit.qty == D("0.018") and fit.reason is None


def test_quantity_is_clamped_to_the_smallest_max_qty_on_the_common_step():
    fit = fit_to_legs(D("1000"), D("1"), (make_leg("0.2", max_qty="50"), make_leg("0.3", max_qty="7")))
    assert fit.qty == D("6.6")


def test_max_qty_below_min_qty_is_a_rejection_not_a_one_legged_order():
    fit = fit_to_legs(D("1000"), D("1"), (make_leg("1", min_qty="10", name="A"), make_leg("1", max_qty="5", name="B")))
    assert fit.reason == "BELOW_MIN_QTY"
    assert fit.detail == "leg=A qty=5 min_qty=10 clamped_by=B:max_qty"


def test_leg_max_notional_clamps_the_quantity_of_every_leg():
    # Binance's NOTIONAL filter: a leg may not trade more than 500 USD at once
    legs = (make_leg("0.01", name="XUSDT"), make_leg("0.01", name="XUSDT-PERP"))
    legs = (legs[0], Leg(**{**legs[1].model_dump(), "max_notional": D("500")}))
    fit = fit_to_legs(D("1000"), D("100"), legs)
    assert fit.reason is None
    assert fit.qty == D("5") and fit.qty * D("100") == D("500")
    assert fit.unclamped == D("10")
    assert str(fit.clamped_by) == "leg=XUSDT-PERP max_notional=500"


def test_max_qty_below_one_step_is_that_legs_fault_not_a_minimums():
    spot = make_leg("0.001", min_qty="0.001", name="BTCUSDT")
    perp = make_leg("0.001", min_qty="0.001", max_qty="0.0005", name="BTCUSDT-PERP")
    fit = fit_to_legs(D("1000"), D("50000"), (spot, perp))
    assert fit.reason == "BELOW_MIN_QTY"
    assert fit.detail == "leg=BTCUSDT-PERP max_qty=0.0005 qty_step=0.001 qty=0: no whole step fits under it"
    assert fit.unclamped == D("0.02")


def test_max_notional_below_one_step_names_its_leg():
    leg = Leg(venue_symbol="XUSDT", side="buy", qty_step=D("1"), max_notional=D("50"))
    fit = fit_to_legs(D("1000"), D("100"), (leg,))
    assert fit.reason == "BELOW_MIN_QTY"
    assert fit.detail.startswith("leg=XUSDT max_notional=50 ")


@given(
    budget=st.decimals(min_value=0, max_value=100_000, places=4),
    price=st.decimals(min_value=D("0.01"), max_value=10_000, places=2),
    max_notional=st.decimals(min_value=D("0.01"), max_value=50_000, places=2),
    max_qty=st.one_of(st.none(), st.decimals(min_value=D("0.001"), max_value=1000, places=3)),
)
def test_an_accepted_quantity_respects_every_legs_maximums(budget, price, max_notional, max_qty):
    legs = (Leg(venue_symbol="A", side="buy", qty_step=D("0.01"), max_qty=max_qty),
            Leg(venue_symbol="B", side="sell", qty_step=D("0.001"), max_notional=max_notional))
    with localcontext(ENGINE_CONTEXT):
        fit = fit_to_legs(budget, price, legs)
        if fit.reason is None:
            assert fit.qty * price <= max_notional and fit.qty * price <= budget
            assert max_qty is None or fit.qty <= max_qty
            assert fit.qty % D("0.01") == 0


def test_zero_budget_is_below_min_qty():
    assert fit_to_legs(D("0"), D("10"), (make_leg("0.1"),)).reason == "BELOW_MIN_QTY"


steps = st.sampled_from(["0.001", "0.002", "0.004", "0.005", "0.006", "0.01", "0.1", "0.25", "1", "3"])


@given(
    budget=st.decimals(min_value=0, max_value=100_000, places=6),
    price=st.decimals(min_value=D("0.0001"), max_value=100_000, places=4),
    leg_steps=st.lists(steps, min_size=1, max_size=3),
)
def test_accepted_quantity_fits_every_leg_and_never_exceeds_the_budget(budget, price, leg_steps):
    legs = tuple(make_leg(step, name=f"L{i}") for i, step in enumerate(leg_steps))
    fit = fit_to_legs(budget, price, legs)
    if fit.reason is None:
        assert fit.qty > 0
        assert fit.qty * price <= budget
        for leg in legs:
            assert fit.qty % leg.qty_step == 0
        # rounding down: one more common step would not fit
        assert (fit.qty + fit.step) * price > budget


@given(
    budget=st.decimals(min_value=D("0.000000000000000001"), max_value=D("999999999999999"), places=18),
    price=st.sampled_from([D("0.000000000000000001"), D("0.00000817"), D("1"), D("48000.5"), D("9999999999999999")]),
    step=st.sampled_from([D("0.000000000000000001"), D("0.000000001"), D("0.001"), D("1"), D("1000000")]),
)
def test_rounding_is_exact_at_the_extremes_of_the_wire_bounds(budget, price, step):
    with localcontext(ENGINE_CONTEXT):
        fit = fit_to_legs(budget, price, (make_leg(str(step)),))
    if fit.qty > 0:
        with localcontext(ENGINE_CONTEXT):  # the checks too must not round
            assert fit.qty % step == 0
            assert fit.qty * price <= budget
            assert (fit.qty + step) * price > budget
