from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.errors import InvalidMessage
from streams.wire.models import (
    MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS, Fill, Instrument, OrderFilled, Signal, decode, fields_of, format_event_time,
    parse_event_time, to_json,
)

SIGNAL = b'{"signal_id":"s-1","portfolio_id":"p1","symbol":"X","side":"buy","score":%s,"price":%s,"ts":%s}'


def test_numbers_become_decimals_without_passing_through_float():
    signal = decode(Signal, SIGNAL % (b"0.1", b"50000.123456789012345678", b'"2026-01-01T00:00:00Z"'))

    assert signal.score == Decimal("0.1")
    assert signal.price == Decimal("50000.123456789012345678")
    assert signal.ts == 1_767_225_600_000


def test_decimals_are_written_as_canonical_strings():
    signal = decode(Signal, SIGNAL % (b'"0.90"', b"5E+4", b"1767225600000"))

    assert to_json(signal) == ('{"signal_id":"s-1","portfolio_id":"p1","symbol":"X","side":"buy",'
                               '"score":"0.9","price":"50000","ts":"2026-01-01T00:00:00.000Z"}')


def test_unknown_fields_are_ignored():
    raw = b'{"symbol":"X","legs":[{"venue_symbol":"XU","side":"buy","qty_step":"0.1","colour":"red"}],"extra":1}'
    assert decode(Instrument, raw).legs[0].qty_step == Decimal("0.1")


@pytest.mark.parametrize(
    ("raw", "code", "detail"),
    [
        (b"{nope", "INVALID_JSON", "not valid JSON"),
        (b'["a"]', "NOT_AN_OBJECT", "got list"),
        (SIGNAL % (b'"1.5"', b"1", b"0"), "INVALID_FIELD", "score: Input should be less than or equal to 1"),
        (SIGNAL % (b'"0.5"', b"-3", b"0"), "INVALID_FIELD", "price: Input should be greater than 0"),
        (SIGNAL % (b'"0.5"', b'"abc"', b"0"), "INVALID_FIELD", "price: is not a decimal number"),
        (SIGNAL % (b'"0.5"', b"NaN", b"0"), "INVALID_JSON", "NaN is not a number"),
        (SIGNAL % (b'"0.5"', b"1", b'"2026-01-01T00:00:00"'), "INVALID_FIELD", "ts: is not an RFC 3339 time with an offset"),
        (b'{"signal_id":"s","portfolio_id":"p","side":"buy","score":"1","price":"1","ts":0}', "MISSING_FIELD", "symbol: Field required"),
    ],
)
def test_invalid_signals_name_the_field_and_the_rule(raw, code, detail):
    with pytest.raises(InvalidMessage) as raised:
        decode(Signal, raw)
    assert raised.value.code == code
    assert detail in raised.value.detail


def test_fills_are_told_apart_by_type():
    fill = decode(Fill, b'{"event_id":"f","portfolio_id":"p","ts":5,"type":"order_filled","order_id":"o",'
                        b'"symbol":"X","qty":"0.018","price":50010,"final":true}')
    assert isinstance(fill, OrderFilled) and fill.final and fill.price == Decimal(50010)
    with pytest.raises(InvalidMessage, match="type: Input tag 'refund'"):
        decode(Fill, b'{"event_id":"f","portfolio_id":"p","ts":5,"type":"refund"}')


def test_event_time_round_trips_in_milliseconds():
    assert format_event_time(1_767_225_600_123) == "2026-01-01T00:00:00.123Z"
    signal = decode(Signal, SIGNAL % (b'"1"', b'"1"', b'"2026-01-01T01:00:00.123+01:00"'))
    assert signal.ts == 1_767_225_600_123


@settings(max_examples=2000, deadline=None)
@given(st.integers(min_value=MIN_EVENT_TIME_MS, max_value=MAX_EVENT_TIME_MS))
def test_every_event_time_is_written_as_the_calendar_writes_it(epoch_ms):
    # the model: the standard library's calendar, to the millisecond
    moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=epoch_ms)
    expected = moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"

    assert format_event_time(epoch_ms) == expected
    assert parse_event_time(expected) == epoch_ms


@pytest.mark.parametrize("epoch_ms, text", [
    (0, "1970-01-01T00:00:00.000Z"),
    (86_399_999, "1970-01-01T23:59:59.999Z"),
    (951_782_400_000, "2000-02-29T00:00:00.000Z"),  # a leap day of a century divisible by 400
    (MAX_EVENT_TIME_MS, "9999-12-31T23:59:59.999Z"),
])
def test_event_times_at_the_edges_of_days_and_of_the_range(epoch_ms, text):
    assert format_event_time(epoch_ms) == text


@pytest.mark.parametrize(
    ("price", "rule"),
    [
        (b'"1E-1000000"', "price: must have at most 18 decimal places"),
        (b'"1E+1000000"', "price: must be below 1e16 in magnitude"),
        (b'"0.0000000000000000001"', "price: must have at most 18 decimal places"),
        (b"10000000000000000", "price: must be below 1e16 in magnitude"),
    ],
)
def test_decimals_beyond_the_wire_bounds_are_invalid_not_overflows(price, rule):
    with pytest.raises(InvalidMessage) as raised:
        decode(Signal, SIGNAL % (b'"0.5"', price, b"0"))
    assert raised.value.detail == rule


def test_trailing_zeros_do_not_count_as_decimal_places():
    signal = decode(Signal, SIGNAL % (b'"0.5"', b'"123.450000000000000000000"', b"0"))
    assert signal.price == Decimal("123.45")


def test_fields_of_reads_a_messages_fields_and_refuses_writes():
    signal = Signal(signal_id="s-1", portfolio_id="p1", symbol="BTC-USD", side="buy", score="0.5",
                    price="100.5", ts=1_767_225_600_000)
    view = fields_of(signal)
    assert (view.signal_id, view.portfolio_id, view.symbol, view.side) == ("s-1", "p1", "BTC-USD", "buy")
    assert (view.score, view.price, view.ts) == (Decimal("0.5"), Decimal("100.5"), 1_767_225_600_000)
    assert (view.intent, view.reduce_fraction) == ("open", Decimal(1))  # defaults too
    with pytest.raises(TypeError, match="read-only"):
        view.price = Decimal("1")
    with pytest.raises(TypeError, match="read-only"):
        del view.symbol
    assert signal.price == Decimal("100.5") and signal.symbol == "BTC-USD"
