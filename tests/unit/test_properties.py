"""Invariants over random sequences of signals, fills, cancels and closes."""

from decimal import Decimal as D
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.config import load_config
from streams.engine import InputPosition, PortfolioState, apply_fill, decide
from streams.wire.models import Fill, Instrument, Signal, validate
from streams.history.replay import replay
from streams.wire.models import to_json
from tests.builders import T0, canceled, closed, filled, instrument, journal_text, leg, signal
from tests.unit.engine_helpers import processor

INSTRUMENTS = [
    instrument("BTC", leg("BTCUSDT", qty_step="0.001", min_qty="0.001", min_notional="5")),
    instrument("ETH-BASIS", leg("ETHUSDT", "buy", qty_step="0.004", min_qty="0.008", min_notional="5"),
               leg("ETHUSDT-PERP", "sell", qty_step="0.006", min_qty="0.03", max_qty="2", min_notional="10")),
    instrument("SOL", leg("SOLUSDT", qty_step="0.1", min_qty="0.1", max_qty="500")),
]
SYMBOLS = [entry["value"]["symbol"] for entry in INSTRUMENTS]
LEGS = {entry["value"]["symbol"]: entry["value"]["legs"] for entry in INSTRUMENTS}

scores = st.decimals(min_value=0, max_value=1, places=3)
prices = st.sampled_from(["0.5", "3", "17.25", "150", "999.9", "2500", "48000"])
action = st.one_of(
    st.tuples(st.just("signal"), st.integers(0, 2), st.integers(0, 2), scores, prices,
              st.integers(0, 5_000)),
    st.tuples(st.just("fill"), st.integers(0, 50), st.sampled_from(["0.25", "0.5", "1"]), st.booleans()),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("close"), st.integers(0, 2), st.integers(0, 2), st.sampled_from(["0.5", "1"]),
              st.sampled_from(["-30", "-1", "0", "2", "45"])),
)
actions = st.lists(action, max_size=120)

CONFIGS = {
    "conviction": {},
    "graduated": {},
    "conviction-mark": {"SIZING_EXPOSURE_BASIS": "mark"},
    "graduated-shrink-tight": {"SIZING_CAP_MODE": "shrink", "SIZING_PORTFOLIO_CAP": "0.2%",
                               "SIZING_PAIR_CAP_USD": "120"},
}


def config_for(name, monkeypatch):
    for key, value in CONFIGS[name].items():
        monkeypatch.setenv(key, value)
    return load_config(name.split("-")[0])




def run(plan, config, checked=True):
    """Run a plan through a Processor, checking the invariants at every step (unless
    not `checked`: a plan whose fills overfill an order can pass the cap)."""
    proc = processor(config)
    for entry in INSTRUMENTS:
        proc.on_instrument(validate(Instrument, entry["value"]))
    open_orders = []  # (portfolio, order_id, symbol, qty, price)
    entries = list(INSTRUMENTS)
    ts = T0
    for step in plan:
        kind = step[0]
        if kind == "signal":
            _, p, s, score, price, dt = step
            ts += dt
            entry = signal(f"p{p}", SYMBOLS[s], str(score), price, ts)
            portfolio = entry["value"]["portfolio_id"]
            result = proc.on_signal(validate(Signal, entry["value"]))
            if checked:
                check_decision(result, config, proc.store.load(portfolio))
            if result.order is not None:
                o = result.order
                open_orders.append((o.portfolio_id, o.order_id, o.symbol, o.qty, o.price))
        elif kind in ("fill", "cancel"):
            if not open_orders:
                continue
            portfolio, oid, symbol, qty, price = open_orders[step[1] % len(open_orders)]
            if kind == "fill":
                entry = filled(portfolio, oid, symbol, str(qty * D(step[2])), str(price), ts, final=step[3])
            else:
                entry = canceled(portfolio, oid, ts)
            proc.on_fill(validate(Fill, entry["value"]))
        else:
            _, p, s, fraction, pnl = step
            entry = closed(f"p{p}", SYMBOLS[s], fraction, "100", pnl, ts)
            proc.on_fill(validate(Fill, entry["value"]))
        entries.append(entry)
        if checked and config.portfolio_cap.usd is not None and config.exposure_basis == "entry":
            # Fills here are at the reserved price, so an absolute cap holds for the state itself.
            for state in proc.store.states.values():
                assert state.position_value(config) + state.reserved() <= config.portfolio_cap.usd
    return entries


def check_decision(result, config, state_after):
    decision = result.decision
    if decision.outcome != "accepted":
        assert result.order is None
        return
    trace = decision.trace
    notional = decision.notional
    assert trace["state"]["exposure"] + notional <= trace["caps"]["portfolio_cap"]
    if config.pair_cap is not None:
        assert trace["caps"]["pair_exposure"] + notional <= config.pair_cap
    for wire_leg in LEGS[result.order.symbol]:
        assert decision.qty % D(wire_leg["qty_step"]) == 0
        assert decision.qty >= D(wire_leg["min_qty"])
        assert notional >= D(wire_leg["min_notional"])
        if wire_leg["max_qty"] is not None:
            assert decision.qty <= D(wire_leg["max_qty"])
    assert [leg.qty for leg in result.order.legs] == [decision.qty] * len(LEGS[result.order.symbol])
    assert state_after.reserved(result.order.symbol) >= notional


@pytest.mark.parametrize("name", sorted(CONFIGS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=actions)
def test_exposure_never_passes_the_caps_and_quantities_fit_every_leg(name, plan, monkeypatch):
    run(plan, config_for(name, monkeypatch))


@pytest.mark.parametrize("name", ["conviction", "conviction-mark", "graduated-shrink-tight"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=actions, low=scores, high=scores, symbol=st.integers(0, 2), price=prices)
def test_size_never_decreases_as_the_score_rises(name, plan, low, high, symbol, price, monkeypatch):
    """In shrink mode, with the same state, instrument and price, a higher score never gets less.
    (Skip mode rejects a budget that would exceed what remains, so there only budgets are monotone.)"""
    config = config_for(name, monkeypatch)
    low, high = min(low, high), max(low, high)
    proc = processor(config)
    run_entries = run(plan, config)
    for entry in run_entries:
        if entry["topic"] == "instruments":
            proc.on_instrument(validate(Instrument, entry["value"]))
        elif entry["topic"] == "fills":
            proc.on_fill(validate(Fill, entry["value"]))
        else:
            proc.on_signal(validate(Signal, entry["value"]))
    state = proc.store.load("p0")
    ts = state.exposure.latest_ts or T0
    inst = proc.instruments[SYMBOLS[symbol]]
    sized = []
    for score in (low, high):
        probe = validate(Signal, signal("p0", SYMBOLS[symbol], str(score), price, ts, signal_id="probe")["value"])
        decision = decide(probe, inst, state, config).decision
        sized.append(decision.qty if decision.outcome == "accepted" else D(0))
    assert sized[0] <= sized[1]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=actions)
def test_replaying_a_journal_twice_gives_byte_identical_output(plan, monkeypatch):
    config = config_for("graduated", monkeypatch)
    text = journal_text(run(plan, config))
    outputs = []
    for _ in range(2):
        out = io.StringIO()
        replay(io.StringIO(text), config, lambda d, o: out.write(to_json(d) + "\n" + (to_json(o) if o else "") + "\n"),
               lambda n, r: pytest.fail(f"line {n}: {r}"))
        outputs.append(out.getvalue().encode())
    assert outputs[0] == outputs[1]
    assert outputs[0].count(b'"outcome"') == text.count('"signals"')


@pytest.mark.parametrize("name", sorted(CONFIGS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(action, min_size=40, max_size=100))
def test_an_unexplained_decision_is_the_explained_one_without_its_trace(name, plan, monkeypatch):
    """`decide(..., explained=False)` (what-if runs): the same outcome, reason, order id,
    qty, notional, config hash and new state as the explained decision, and the
    exposure it read; no order. Reservations lapse here too (a 6 s TTL: 5 s of signal
    age and 1 s of future skew, as the clock rules want)."""
    entries = run(plan, config_for(name, monkeypatch), checked=False)
    monkeypatch.setenv("SIZING_MAX_SIGNAL_AGE_S", "5")
    monkeypatch.setenv("SIZING_MAX_FUTURE_SKEW_S", "1")
    monkeypatch.setenv("SIZING_RESERVATION_TTL_S", "6")
    config = config_for(name, monkeypatch)
    instruments, states = {}, {}
    fresh = PortfolioState.fresh(config)
    compared = 0
    for offset, entry in enumerate(entries):
        if entry["topic"] == "instruments":
            message = validate(Instrument, entry["value"])
            instruments[message.symbol] = message
            continue
        if entry["topic"] == "fills":
            message = validate(Fill, entry["value"])
            states[message.portfolio_id] = apply_fill(message, states.get(message.portfolio_id, fresh), config).state
            continue
        message = validate(Signal, entry["value"])
        state = states.get(message.portfolio_id, fresh)
        position = InputPosition("signals", 0, offset)
        full = decide(message, instruments.get(message.symbol), state, config, position)
        lean = decide(message, instruments.get(message.symbol), state, config, position, explained=False)
        said = ("signal_id", "portfolio_id", "outcome", "reason", "order_id", "qty", "notional", "config_hash")
        assert [getattr(lean.decision, f) for f in said] == [getattr(full.decision, f) for f in said]
        assert lean.state == full.state
        assert lean.decision.trace == {"state": {"exposure": full.decision.trace["state"]["exposure"]}} | (
            {key: full.decision.trace[key] for key in ("budget", "caps", "exchange", "detail", "static", "base",
                                                       "conviction", "drawdown_multiplier")
             if key in full.decision.trace})
        assert lean.order is None
        compared += 1
        states[message.portfolio_id] = full.state
    assert compared == sum(entry["topic"] == "signals" for entry in entries)
