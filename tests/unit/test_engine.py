import hashlib
from decimal import Decimal as D

import pytest

from streams.config import load_config
from streams.engine import order_id_for
from streams.engine.state import Book
from streams.wire.models import Fill, validate
from tests.builders import T0, canceled, closed, filled, instrument, leg, signal
from tests.unit.engine_helpers import feed, processor

BTC = instrument("BTC", leg("BTCUSDT", qty_step="0.001"))


@pytest.fixture
def conviction():
    return load_config("conviction")


def test_duplicate_signal_is_rejected_and_changes_nothing(conviction):
    proc = processor(conviction)
    first, = feed(proc, [BTC, signal("p1", "BTC", "0.9", "100", signal_id="dup")])
    state = proc.store.load("p1")

    again, = feed(proc, [signal("p1", "BTC", "0.9", "100", signal_id="dup")])

    assert first.decision.outcome == "accepted"
    assert again.decision.reason == "DUPLICATE_SIGNAL" and again.order is None
    assert proc.store.load("p1") is state


def test_unknown_instrument_is_rejected(conviction):
    result, = feed(processor(conviction), [signal("p1", "NOPE", "0.9", "100")])
    assert result.decision.reason == "UNKNOWN_INSTRUMENT"
    assert result.decision.trace["detail"] == "symbol=NOPE"


def test_signal_older_than_max_age_against_the_portfolio_clock_is_stale(conviction):
    results = feed(processor(conviction), [
        BTC, signal("p1", "BTC", "0.5", "100", ts=T0 + 400_000),
        signal("p1", "BTC", "0.5", "100", ts=T0 + 99_999),  # 300.001 s older
        signal("p1", "BTC", "0.5", "100", ts=T0 + 100_000),  # exactly 300 s: still fresh
    ])
    assert [r.decision.reason for r in results] == [None, "STALE_SIGNAL", None]


def test_disabled_sizing_uses_the_static_pair_maximum(monkeypatch):
    monkeypatch.setenv("SIZING_ENABLED", "false")
    result, = feed(processor(load_config("conviction")), [BTC, signal("p1", "BTC", "0.01", "100")])
    assert result.decision.trace["static"] is True
    assert result.decision.notional == D("1000")


def test_min_score_rejects_weak_linear_signals(monkeypatch):
    monkeypatch.setenv("SIZING_MIN_SCORE", "0.4")
    weak, strong = feed(processor(load_config("conviction")),
                        [BTC, signal("p1", "BTC", "0.39", "100"), signal("p2", "BTC", "0.4", "100")])
    assert weak.decision.reason == "LOW_CONFIDENCE"
    assert strong.decision.notional == D("580")


def test_tier_boundaries_are_strict_above_0_85_and_inclusive_at_0_60():
    results = feed(processor(load_config("graduated")), [BTC] + [
        signal(f"p{i}", "BTC", score, "1") for i, score in enumerate(["0.86", "0.85", "0.60", "0.5999"])])
    assert [r.decision.notional or r.decision.reason for r in results] == [D(100), D(75), D(75), "LOW_CONFIDENCE"]


def test_fill_moves_reservation_into_the_position(conviction):
    proc = processor(conviction)
    accepted, = feed(proc, [BTC, signal("p1", "BTC", "1", "100")])
    oid = accepted.order.order_id
    feed(proc, [filled("p1", oid, "BTC", "4", "101", final=False)])

    state = proc.store.load("p1")
    assert state.reserved() == D("600")  # 6 of 10 still open at 100
    assert state.position_value(conviction) == D("404")

    feed(proc, [filled("p1", oid, "BTC", "5", "99", final=True)])
    state = proc.store.load("p1")
    assert state.reserved() == 0
    assert state.exposure.positions["BTC"].qty == D("9")
    assert state.position_value(conviction) == D("899")


def test_close_takes_its_share_of_entry_notional_and_books_pnl(conviction):
    proc = processor(conviction)
    accepted, = feed(proc, [BTC, signal("p1", "BTC", "1", "100")])
    feed(proc, [filled("p1", accepted.order.order_id, "BTC", "10", "100"),
                closed("p1", "BTC", "4", "110", "40")])
    state = proc.store.load("p1")
    assert state.exposure.positions["BTC"].entry_notional == D("600")
    assert state.streak.equity == D("100040")
    assert (state.streak.consecutive_wins, state.streak.closed_trades, state.streak.gross_profit) == (1, 1, D(40))


def test_duplicate_fill_event_changes_state_once(conviction):
    proc = processor(conviction)
    feed(proc, [BTC, closed("p1", "BTC", "1", "1", "-5", event_id="f-x")])
    after_first = proc.store.load("p1")
    feed(proc, [closed("p1", "BTC", "1", "1", "-5", event_id="f-x")])
    assert proc.store.load("p1") is after_first
    assert after_first.streak.consecutive_losses == 1


def test_reservations_never_lapse_by_default(conviction):
    proc = processor(conviction)
    markets = [instrument(f"M{i}", leg(f"M{i}", qty_step="0.001")) for i in range(6)]
    full = feed(proc, markets + [signal("p1", f"M{i}", "1", "1", ts=T0) for i in range(5)])
    assert all(r.decision.outcome == "accepted" for r in full)
    # a day of event time later, nothing filled or canceled them: still 5,000 reserved
    later, = feed(proc, [signal("p1", "M5", "1", "1", ts=T0 + 86_400_000)])
    assert later.decision.reason == "EXPOSURE_CAP_REACHED"
    assert later.decision.trace["state"]["reserved"] == 5000


def test_a_configured_ttl_lapses_reservations_on_the_portfolio_clock_and_says_so(monkeypatch):
    monkeypatch.setenv("SIZING_RESERVATION_TTL_S", "600")
    proc = processor(load_config("conviction"))
    markets = [instrument(f"M{i}", leg(f"M{i}", qty_step="0.001")) for i in range(6)]
    full = feed(proc, markets + [signal("p1", f"M{i}", "1", "1", ts=T0) for i in range(5)])
    blocked, = feed(proc, [signal("p1", "M5", "1", "1", ts=T0 + 599_999)])
    freed, = feed(proc, [signal("p1", "M5", "1", "1", ts=T0 + 600_000)])
    assert blocked.decision.reason == "EXPOSURE_CAP_REACHED"
    assert freed.decision.outcome == "accepted"
    assert freed.decision.trace["state"]["reserved"] == 0
    assert freed.decision.trace["state"]["lapsed_reservations"] == 5
    assert [lapse["order_id"] for lapse in freed.decision.trace["lapsed"]] == [r.order.order_id for r in full]
    assert all(lapse["made_ts"] == "2026-01-01T00:00:00.000Z" and lapse["notional"] == 1000 for lapse in freed.decision.trace["lapsed"])


def test_cancel_of_an_unknown_order_is_harmless(conviction):
    proc = processor(conviction)
    feed(proc, [canceled("p1", "o-none")])
    assert proc.store.load("p1").reserved() == 0


def test_mark_basis_revalues_positions_at_the_latest_signal_price(monkeypatch):
    monkeypatch.setenv("SIZING_EXPOSURE_BASIS", "mark")
    config = load_config("conviction")
    proc = processor(config)
    accepted, = feed(proc, [BTC, signal("p1", "BTC", "1", "100")])
    feed(proc, [filled("p1", accepted.order.order_id, "BTC", "10", "100")])
    later, = feed(proc, [signal("p1", "BTC", "1", "150", ts=T0 + 1)])
    assert later.decision.trace["state"]["positions"] == D("1500")
    assert later.decision.reason == "PAIR_CAP_REACHED"


def test_order_id_is_deterministic_from_portfolio_and_signal():
    assert order_id_for("p1", "s-1") == order_id_for("p1", "s-1")
    assert order_id_for("p1", "s-1") != order_id_for("p2", "s-1")
    assert order_id_for("p1", "s-1") != order_id_for("p1", "s-2")


def test_trace_names_the_input_position_and_last_fill_applied(conviction):
    proc = processor(conviction)
    results = feed(proc, [BTC, closed("p1", "BTC", "1", "1", "1"), signal("p1", "BTC", "1", "100")])
    assert results[0].decision.trace["input"] == {"topic": "signals", "partition": 0, "offset": 2,
                                                  "last_fill_offset": 1, "instrument_offset": None,
                                                  "last_control_offset": None, "controls_applied": []}


def test_losses_in_graduated_mode_halve_and_equity_loss_shrinks_the_cap():
    proc = processor(load_config("graduated"))
    result, = feed(proc, [BTC, closed("p1", "BTC", "1", "1", "-50000"), closed("p1", "BTC", "1", "1", "-1"),
                          signal("p1", "BTC", "0.9", "1")])
    # equity 49999: base 49.999, halved 24.9995, cap 1% = 499.99
    assert result.decision.trace["caps"]["portfolio_cap"] == D("499.99")
    assert result.decision.notional == D("24.999")


def test_every_time_in_a_trace_is_rfc_3339_as_on_the_wire(monkeypatch):
    monkeypatch.setenv("SIZING_RESERVATION_TTL_S", "600")
    proc = processor(load_config("conviction"))
    first, = feed(proc, [instrument("X", leg("X")), signal("p1", "X", "0.9", "100", ts=T0 + 1)])
    later, = feed(proc, [signal("p1", "X", "0.9", "100", ts=T0 + 600_001, signal_id="s-later")])
    trace = later.decision.trace

    assert first.decision.trace["state"]["latest_ts"] is None  # no clock before the first input
    assert trace["signal"]["ts"] == "2026-01-01T00:10:00.001Z"
    assert trace["state"]["latest_ts"] == "2026-01-01T00:00:00.001Z"
    assert trace["state"]["clock"] == "2026-01-01T00:10:00.001Z"
    assert [lapse["made_ts"] for lapse in trace["lapsed"]] == ["2026-01-01T00:00:00.001Z"]


def test_a_cancel_of_no_open_order_moves_no_clock_but_is_placed_for_the_audit(conviction):
    proc = processor(conviction)
    feed(proc, [BTC, signal("p1", "BTC", "1", "100", ts=T0)])
    before = proc.store.load("p1").exposure
    result = proc.on_fill(validate(Fill, canceled("p1", "o-not-yet", ts=T0 + 999_000)["value"]), 41)
    assert result.outcome == "unknown_order"
    assert result.state.exposure.latest_ts == before.latest_ts == T0
    assert result.state.exposure.last_fill_offset == 41  # the audit rebuilds the interleaving by it


def test_the_kill_switch_trips_on_any_loss_once_no_positive_peak_is_left(monkeypatch):
    from streams.wire.models import Control

    monkeypatch.setenv("SIZING_MAX_DRAWDOWN_PCT", "5")
    proc = processor(load_config("conviction"))
    withdraw = {"command_id": "w", "portfolio_id": "p1", "ts": T0, "type": "adjust_equity", "operator": "ops",
                "reason": "all out", "amount": "-100000"}
    proc.on_control(validate(Control, withdraw), 0)
    assert proc.store.load("p1").controls.max_drawdown is None  # a withdrawal is not a loss
    feed(proc, [closed("p1", "BTC", "1", "1", "-1000")])
    latch = proc.store.load("p1").controls.max_drawdown
    assert latch is not None and latch.reason == "MAX_DRAWDOWN" and "drawdown_pct=unbounded" in latch.text
    assert proc.store.load("p1").controls.halt is None  # the operator's latch is the other one


def test_an_order_id_is_the_blake2b_of_portfolio_and_signal_ids_every_time():
    expected = "o-" + hashlib.blake2b(b"p1\x1fs-1", digest_size=12).hexdigest()
    assert [order_id_for("p1", "s-1") for _ in range(3)] == [expected] * 3  # no state kept between calls
    assert order_id_for("p2", "s-9") == "o-" + hashlib.blake2b(b"p2\x1fs-9", digest_size=12).hexdigest()


def test_a_book_with_or_without_an_entry_is_a_new_book_the_rest_in_order():
    held = Book({"a": 1, "b": 2, "c": 3})
    without, replaced = held.without("b"), held.with_entry("b", 5)
    assert list(without.items()) == [("a", 1), ("c", 3)] and type(without) is Book
    assert list(replaced.items()) == [("a", 1), ("b", 5), ("c", 3)] and type(replaced) is Book
    assert list(held.items()) == [("a", 1), ("b", 2), ("c", 3)]
    with pytest.raises(TypeError):
        held["d"] = 4
