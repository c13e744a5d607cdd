"""The fast JSON decoder (msgspec) decodes exactly what the reference parser (json
with parse_float=Decimal) decodes, to the same values, and every input it refuses
is refused with the reference parser's words: a dead letter reads the same."""

import json
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.errors import InvalidMessage
from streams.wire import decimals
from streams.wire.admission import admit_record
from streams.wire.models import (
    MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS, Fill, Instrument, Order, OrderLeg, Signal, build, decode, to_json,
)


def exact(value):
    """A value with every type and Decimal exponent spelled out (Decimal('1.50') == Decimal('1.5'))."""
    if isinstance(value, dict):
        return ("dict", [(exact(k), exact(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [exact(v) for v in value])
    return (type(value).__name__, repr(value))


def outcome(parse, raw):
    try:
        return ("ok", exact(parse(raw)))
    except Exception as exc:  # noqa: BLE001 - the outcome under test
        return ("error", type(exc).__name__, str(exc))


def same_as_reference(raw):
    assert outcome(decimals.loads, raw) == outcome(decimals.reference_loads, raw)


ADVERSARIAL = [
    '{"price": 1_00}', '{"price": "1_00"}', '{"price": ١٢٣}', '{"price": "١٢٣"}', '{"price": 1e1000000000000000000}',
    '{"price": -1e1000000000000000000}', '{"price": NaN}', '{"price": Infinity}', '{"price": -Infinity}',
    '{"price": -0}', '{"price": -0.0}', '{"price": 0e0}', '{"price": 1E+400}', '{"price": 1e-400}',
    '{"price": 01}', '{"price": 00.5}', '{"price": .5}', '{"price": 5.}', '{"price": +1}', '{"price": 1.50}',
    '{"price": 123456789012345678901234567890.123456789}', '{"ts": 18446744073709551616}',
    '{"ts": -9223372036854775809}', '{"ts": 1.767225600e12}',
    ' {"a": 1} ', '\t\n\r{"a": 1}\r\n', '\x0c{"a": 1}', '\u00a0{"a": 1}', '\ufeff{"a": 1}',
    '{"a": 1, "a": 2}', '{"a": {"b": 1}, "a": 3}', '{1: 2}', '{"a": 1,}', '[1,]', "{'a': 1}",
    '{"signal_id": 7}', '{"signal_id": null}', '{"signal_id": ["s"]}', '{"signal_id": true}',
    '{"a": "x\x01y"}', '{"a": "x\\u0001y"}', '{"a": "\\u0000"}', '{"a": "\x7f"}', '{"a": "\\ud800"}',
    '{"a": "\\udc00\\ud800"}', '{"a": "\\ud83d\\ude00"}', '{"a": "\\x41"}', '{"a": "\\/"}', '{"a": "é😀"}',
    '{"a": 1}x', '{"a": 1}{"b": 2}', '', ' ', 'null', 'true', '1', '"s"', '[]', '{}', '{"a": tru}',
    '{"a": nul}', '{"a"}', '{"a": }', '[' * 50 + ']' * 50, '[' * 400 + ']' * 400, '{"a":' * 200 + '1' + '}' * 200,
    '[' + '9' * 1000 + ']', '[' + '9' * 4300 + ']', '[' + '9' * 4301 + ']', '[-' + '9' * 5000 + ']',
    '[' + '9' * 5000 + '.5]', '[' * 5000 + ']' * 5000,
]


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_adversarial_text_decodes_as_the_reference_parser_does(text):
    same_as_reference(text)
    try:
        raw = text.encode()
    except UnicodeEncodeError:
        return
    same_as_reference(raw)


@pytest.mark.parametrize("raw", [
    b'\xef\xbb\xbf{"a": 1}', b'\xff\xfe{\x00}\x00', b'{\x00"\x00a\x00"\x00:\x001\x00}\x00', b'"\xff"', b'"\xc3"',
    b'{"a": "\xed\xa0\x80"}', b'{"a": "\xc0\xaf"}', b'\x00', b'{"a": 1}\x00', bytearray(b'{"a": 1.0}'),
])
def test_adversarial_bytes_decode_as_the_reference_parser_does(raw):
    same_as_reference(raw)


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=8),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
)
_JSON = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)), max_leaves=12)
_NOISE = st.sampled_from(list("{}[],:\"\\ .-+eE0123456789_\x00\x01\x7f\u0660\ufeffntfrualsNIi") + ["\\u", "\\ud800"])


def _mutated(text, position, noise, delete):
    position %= len(text) + 1
    return text[:position] + noise + text[position + delete:]


@settings(max_examples=400, deadline=None)
@given(_JSON, st.integers(0, 10_000), _NOISE, st.integers(0, 2), st.booleans())
def test_mutated_json_decodes_as_the_reference_parser_does(value, position, noise, delete, as_number):
    text = json.dumps(value)
    if as_number:  # decimals as JSON numbers, not strings
        text = text.replace('"', "")
    for candidate in (text, _mutated(text, position, noise, delete)):
        same_as_reference(candidate)
        same_as_reference(candidate.encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_as_the_reference_parser_does(raw):
    same_as_reference(raw)


SIGNAL = ('{"signal_id": %s, "portfolio_id": "p1", "symbol": "BTC-PERP-BASIS", "side": "buy", '
          '"score": %s, "price": %s, "ts": %s}')


@pytest.mark.parametrize("signal_id, score, price, ts", [
    ('"s-1"', '"0.9"', '"50000"', '"2026-01-01T00:00:00Z"'),
    ('"s-1"', '0.9', '50000.10', '1767225600000'),
    ('"s-1"', '"0.9"', '"1_00"', '1767225600000'),
    ('"s-1"', '"0.9"', '"١٢٣"', '1767225600000'),
    ('"s-1"', '"0.9"', '1e1000000000000000000', '1767225600000'),
    ('"s-1"', '"0.9"', '"1e1000000000000000000"', '1767225600000'),
    ('"s-1"', '"0.9"', 'NaN', '1767225600000'),
    ('"s-1"', '"0.9"', '"NaN"', '1767225600000'),
    ('"s-1"', 'Infinity', '"50000"', '1767225600000'),
    ('"s-1"', '-0', '"50000"', '1767225600000'),
    ('"s-1"', '"-0"', '"50000"', '1767225600000'),
    ('"s-1"', '"0.9"', '"050000"', '1767225600000'),
    ('"s-1"', '"0.9"', '" 50000"', '1767225600000'),
    ('"s-1"', '"0.9"', '1e16', '1767225600000'),
    ('"s-1"', '"0.9"', '"0.0000000000000000001"', '1767225600000'),
    ('7', '"0.9"', '"50000"', '1767225600000'),
    ('"s\\u0001"', '"0.9"', '"50000"', '1767225600000'),
    ('"s-1"', '"0.9"', '"50000"', '1e30'),
    ('"s-1"', '"0.9"', '"50000"', '18446744073709551616'),
    ('"s-1"', '"0.9"', '"50000"', '-1'),
    ('"s-1"', '"0.9"', '"50000"', '"10000-01-01T00:00:00Z"'),
    ('"s-1"', '"0.9"', '"50000"', '1.5'),
    ('"s-1", "signal_id": "s-2"', '"0.9"', '"50000"', '1767225600000'),
])
def test_a_signal_is_admitted_or_dead_lettered_as_with_the_reference_parser(monkeypatch, signal_id, score, price, ts):
    raw = (SIGNAL % (signal_id, score, price, ts)).encode()

    def admitted():
        try:
            return ("ok", admit_record("signals", b"p1", raw, None, 5000).model_dump())
        except InvalidMessage as exc:
            return ("dead letter", exc.code, str(exc))

    fast = admitted()
    monkeypatch.setattr(decimals, "FAST_DECODE_LIMIT", -1)
    assert fast == admitted()


@pytest.mark.parametrize("model, raw", [
    (Fill, b'{"event_id": "f-1", "portfolio_id": "p1", "ts": 1, "type": "order_filled", "order_id": "o", '
           b'"symbol": "X", "qty": 0.010, "price": "5", "final": true}'),
    (Fill, b'{"event_id": "f-1", "portfolio_id": "p1", "ts": 1, "type": "order_filled", "order_id": "o", '
           b'"symbol": "X", "qty": 1e-19, "price": "5"}'),
    (Instrument, b'{"symbol": "X", "legs": [{"venue_symbol": "X", "side": "buy", "qty_step": 0.001}]}'),
    (Instrument, b'{"symbol": "X", "legs": [{"venue_symbol": "X", "side": "buy", "qty_step": 0.001,}]}'),
    (Signal, b'\xef\xbb\xbf{"signal_id": "s"}'),
])
def test_other_messages_decode_as_with_the_reference_parser(monkeypatch, model, raw):
    def decoded():
        try:
            return ("ok", decode(model, raw).model_dump())
        except InvalidMessage as exc:
            return ("dead letter", exc.code, str(exc))

    fast = decoded()
    monkeypatch.setattr(decimals, "FAST_DECODE_LIMIT", -1)
    assert fast == decoded()


def test_numbers_decode_to_the_decimal_their_text_spells():
    assert exact(decimals.loads('{"a": 1.50, "b": 7, "c": -0.0, "d": 1E+2}')) == exact(
        {"a": Decimal("1.50"), "b": 7, "c": Decimal("-0.0"), "d": Decimal("1E+2")})


# The encoder's side: the shortcuts in `canonical`, `to_decimal`, `bounded` and
# `to_json` against the plain definitions they replace.

def reference_canonical(value):
    return "0" if not value else format(value.normalize(), "f")


def reference_bounded(value):
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        raise ValueError("must be a finite number")
    significant = len(digits)
    while significant > 1 and digits[significant - 1] == 0 and exponent < 0:
        significant -= 1
        exponent += 1
    if any(digits) and significant + exponent - 1 > decimals.MAX_ADJUSTED_EXPONENT:
        raise ValueError("must be below 1e16 in magnitude")
    if exponent < -decimals.MAX_PLACES and any(digits):
        raise ValueError(f"must have at most {decimals.MAX_PLACES} decimal places")
    return value


_DECIMALS = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False),
    st.builds(lambda digits, exponent, sign: Decimal((sign, tuple(int(d) for d in digits), exponent)),
              st.text("0123456789", min_size=1, max_size=40), st.integers(-40, 40), st.integers(0, 1)),
    st.sampled_from([Decimal(t) for t in ("0", "-0", "0E+5", "0E-30", "1E+3", "1E-7", "1E-6", "930.00", "-0.000001",
                                          "1E+15", "9999999999999999", "1E+16", "0.000000000000000001",
                                          "0.0000000000000000010", "1.0000000000000000001", "-123.4500E+2")]),
)


@settings(max_examples=600, deadline=None)
@given(_DECIMALS)
def test_canonical_writes_the_plain_notation_of_the_normalized_value(value):
    assert decimals.canonical(value) == reference_canonical(value)
    from decimal import localcontext
    with localcontext(decimals.ENGINE_CONTEXT):
        assert decimals.canonical(value) == reference_canonical(value)


@settings(max_examples=600, deadline=None)
@given(_DECIMALS)
def test_bounded_accepts_and_refuses_as_its_definition(value):
    assert outcome(decimals.bounded, value) == outcome(reference_bounded, value)


def reference_dumps(value):
    def default(item):
        if isinstance(item, Decimal):
            return reference_canonical(item)
        raise TypeError(f"cannot encode {type(item).__name__} as JSON")
    return orjson.dumps(value, default=default).decode()


class _SubDecimal(Decimal):
    pass


@settings(max_examples=600, deadline=None)
@given(_DECIMALS)
def test_dumps_writes_each_decimal_as_its_canonical_definition(value):
    message = {"qty": value, "trace": {"legs": [value, _SubDecimal(value)], "n": 1}}
    assert decimals.dumps(message) == reference_dumps(message)
    from decimal import localcontext
    with localcontext(decimals.ENGINE_CONTEXT):
        assert decimals.dumps(message) == reference_dumps(message)


def test_dumps_refuses_what_is_not_json_or_decimal():
    from fractions import Fraction
    message = {"a": Decimal("1"), "b": Fraction(1)}
    assert outcome(decimals.dumps, message) == outcome(reference_dumps, message)
    assert outcome(decimals.dumps, message)[0] == "error"


def reference_to_decimal(value):
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError("must be a decimal string or an integer, not a float")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        if decimals.JSON_NUMBER.fullmatch(value) is None:
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise ValueError(f"is not a decimal number in JSON number form: {shown!r}")
        try:
            result = Decimal(value)
        except ArithmeticError:
            raise ValueError("is out of range") from None
    else:
        raise ValueError(f"must be a decimal string or number, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError("must be a finite number")
    return result


@pytest.mark.parametrize("value", [
    "1", "-0", "0.10", "1e5", "1E+400", "1e1000000000000000000", "1_00", " 1", "+1", "١", "NaN", "Infinity", "",
    "01", "1.", ".1", "x" * 60, 1, -7, 10**30, True, False, 1.5, float("nan"), Decimal("1.50"), Decimal("NaN"),
    Decimal("-Infinity"), Decimal("sNaN"), None, [1], {"a": 1}, b"1",
])
def test_to_decimal_converts_and_refuses_as_its_definition(value):
    assert outcome(decimals.to_decimal, value) == outcome(reference_to_decimal, value)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30), st.decimals().map(str), st.integers().map(str)))
def test_to_decimal_reads_any_text_as_its_definition(text):
    assert outcome(decimals.to_decimal, text) == outcome(reference_to_decimal, text)


def test_a_decision_is_written_as_its_model_dump_would_be():
    from streams.bench.generate import session
    from streams.config import load_config
    from streams.engine import InputPosition
    from streams.wire import journal
    from streams.processor import MemoryStore, Processor
    from streams.wire.models import Decision, Order, to_json

    for preset in ("conviction", "graduated"):
        config = load_config(preset)
        lines = [decimals.dumps({"topic": topic, "value": value}) for topic, value in session(3000, portfolios=5)]
        proc = Processor(config, MemoryStore(config))
        reasons = set()
        orders = 0
        for offset, entry in enumerate(journal.read(lines, config.max_future_skew_ms)):
            if entry.topic == "signals":
                result = proc.on_signal(entry.message, InputPosition("signals", 0, offset))
                reasons.add(result.decision.reason)
                assert to_json(result.decision) == decimals.dumps(result.decision.model_dump())
                validated = Decision.model_validate(result.decision.model_dump())
                assert to_json(validated) == to_json(result.decision)
                if result.order is not None:
                    orders += 1
                    assert to_json(result.order) == decimals.dumps(result.order.model_dump())
                    assert to_json(Order.model_validate(result.order.model_dump())) == to_json(result.order)
            elif entry.topic == "fills":
                proc.on_fill(entry.message, offset)
            else:
                proc.on_instrument(entry.message)
        assert None in reasons and len(reasons) > 2 and orders > 20


@settings(max_examples=300, deadline=None)
@given(_DECIMALS, _DECIMALS, st.integers(0, 3), st.integers(MIN_EVENT_TIME_MS, MAX_EVENT_TIME_MS))
def test_an_order_is_written_as_its_model_dump_would_be(qty, price, legs, ts):
    order = build(Order, order_id="o-1", signal_id="1.50", portfolio_id="p\u00e9", symbol="X", side="sell", qty=qty,
                  price=price, notional=qty * price if abs(qty) < 10**20 and abs(price) < 10**20 else qty,
                  legs=tuple(build(OrderLeg, venue_symbol=f"V{n}", side=("buy", "sell")[n % 2], qty=qty * n,
                                   kind=("spot", "linear", "inverse")[n % 3], contract_size=Decimal(10) ** (n % 3))
                             for n in range(legs)), ts=ts, config_hash="h", base_qty=qty)
    assert to_json(order) == decimals.dumps(order.model_dump())


# The decimal fields' one validator against the chain it replaces: to_decimal,
# bounded, the scientific-notation rule, then the field's bounds.

def reference_scientific(value):
    """A decimal string written with an exponent is in scientific notation: one digit
    before the point, not 0 unless the value is 0, and an exponent from -18 to 15."""
    if isinstance(value, str) and ("e" in value or "E" in value):
        mantissa, _, exponent = value.lower().partition("e")
        digits = mantissa.lstrip("-").replace(".", "")
        if (len(mantissa.lstrip("-").partition(".")[0]) != 1 or (digits[0] == "0" and digits.strip("0"))
                or not -18 <= int(exponent) <= 15):
            raise ValueError("with an exponent must be in scientific notation (one digit before the point, as in "
                             "1.5E-8) with an exponent from -18 to 15")
    return value


def reference_wire_decimal(value):
    result = reference_bounded(reference_to_decimal(value))  # its errors first
    reference_scientific(value)
    return result


def _reference_field(**bounds):
    from typing import Annotated

    from pydantic import BeforeValidator, Field, TypeAdapter

    chain = Annotated[Decimal, BeforeValidator(reference_wire_decimal)]
    return TypeAdapter(Annotated[chain, Field(**bounds)] if bounds else chain)


def _field_outcomes():
    from pydantic import TypeAdapter

    from streams.wire.models import Dec, NonNegativeDec, PositiveDec, Score
    return [(TypeAdapter(fast), _reference_field(**bounds)) for fast, bounds in [
        (Dec, {}), (PositiveDec, {"gt": 0}), (NonNegativeDec, {"ge": 0}), (Score, {"ge": 0, "le": 1})]]


_FIELDS = _field_outcomes()


def field_outcome(adapter, value):
    from pydantic import ValidationError
    try:
        return ("ok", exact(adapter.validate_python(value)))
    except ValidationError as exc:
        return ("error", [(e["loc"], e["msg"], e["type"], repr(e.get("ctx"))) for e in exc.errors(include_url=False)])


def same_field_outcomes(value):
    for fast, reference in _FIELDS:
        assert field_outcome(fast, value) == field_outcome(reference, value), value


@pytest.mark.parametrize("value", [
    "1", "0", "-0", "0.0", "-0.0", "1.50", "0.5", "1", "1.0", "1.000000000000000000", "1.0000000000000000000",
    "0.000000000000000001", "0.0000000000000000001", "-0.0000000000000000001", "0.0000000000000000000",
    "9999999999999999", "9999999999999999.999999999999999999", "10000000000000000", "-10000000000000000",
    "1e15", "1e16", "1E+16", "-1e17", "1e-18", "1e-19", "0e-30", "0e30", "1.5e1", "100e-20", "0e-18", "0e15",
    "0e16", "-0E-19", "10e3", "0.5e0", "1.50E+3", "1E-8", "1e-0008", "9.999999999999999e15", "1.5e-17", "1.55e-17",
    "1e1000000000000000000", "1_00", " 1", "+1", "١", "NaN", "Infinity", "", "01", "1.", ".1", "x" * 60, "1\n",
    "9" * 400, "0." + "0" * 400 + "1", 0, 1, -1, 2, 10**16, 10**15, True, False, 0.5, None, [1],
    Decimal("1.50"), Decimal("-0"), Decimal("0E-30"), Decimal("1E+16"), Decimal("1E-19"), Decimal("NaN"),
    Decimal("-Infinity"), Decimal("sNaN"), _SubDecimal("1.50"), _SubDecimal("2"), _SubDecimal("1E+20"),
])
def test_a_decimal_field_accepts_and_refuses_as_its_validators_did(value):
    same_field_outcomes(value)


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    _DECIMALS, _DECIMALS.map(str), _DECIMALS.map(lambda d: format(d, "f")), st.integers(-10**20, 10**20),
    st.from_regex(r"-?(0|[1-9][0-9]{0,20})(\.[0-9]{0,25})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.text(max_size=12),
))
def test_any_decimal_field_value_is_validated_as_by_its_validators(value):
    same_field_outcomes(value)


def test_a_remembered_decimal_string_is_validated_per_field_as_the_first_time():
    # "2" is a price but not a score; "0" a quantity minimum but not a price: each
    # field remembers only what it accepted, and the second reading is the first's
    for value in ["2", "0", "0.5", "1.50", "-3", "1e17", "0.0000000000000000001", "2", "0", "0.5", "1.50", "-3"]:
        same_field_outcomes(value)
        same_field_outcomes(value)


def test_remembered_decimal_strings_are_bounded():
    from typing import get_args

    from streams.wire import models
    validate = get_args(models.PositiveDec)[1].validate
    for n in range(1, 3 * models._KNOWN_KEPT):
        assert exact(validate(f"{n}.50")) == exact(Decimal(f"{n}.50"))
    known = [cell.cell_contents for cell in validate.__closure__ if isinstance(cell.cell_contents, dict)]
    assert len(known) == 1 and 0 < len(known[0]) <= models._KNOWN_KEPT


_NUMBER_TEXT = st.one_of(
    st.from_regex(r"-?(0|[1-9][0-9]{0,20})(\.[0-9]{0,25})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.text("-+.0123456789eE_ \u0660\u00b2", max_size=24), st.text(max_size=12),
)


@settings(max_examples=1000, deadline=None)
@given(_NUMBER_TEXT)
def test_wire_decimal_is_to_decimal_then_bounded_then_scientific(text):
    assert outcome(decimals.wire_decimal, text) == outcome(reference_wire_decimal, text)


@pytest.mark.parametrize("text", [
    "0", "-0", "00", "-00", "01", "-01", "0.5", "-0.5", ".5", "-.5", "5.", "-", "", ".", "-.", "1.2.3", "--1",
    "1..2", "1_0", "١", "1\u00b2", "\u00b2", "1 ", " 1", "+1", "1.000000000000000000", "1.0000000000000000000",
    "9999999999999999", "10000000000000000", "9999999999999999.5", "0.00000000000000000000", "1e5", "1E5", "x",
])
def test_wire_decimal_reads_edge_texts_as_to_decimal_then_bounded_then_scientific(text):
    assert outcome(decimals.wire_decimal, text) == outcome(reference_wire_decimal, text)


def reference_parse_event_time(value):
    from streams.wire.models import MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS
    if isinstance(value, bool) or not isinstance(value, int):
        return parse_event_time_other(value)
    if value < MIN_EVENT_TIME_MS:
        raise ValueError("must not be before 1970-01-01T00:00:00Z (epoch milliseconds must not be negative)")
    if value > MAX_EVENT_TIME_MS:
        raise ValueError(f"must not be after 9999-12-31T23:59:59.999Z (epoch milliseconds at most {MAX_EVENT_TIME_MS})")
    return value


def parse_event_time_other(value):
    from streams.wire.models import parse_event_time
    return parse_event_time(value)


class _SubInt(int):
    pass


@pytest.mark.parametrize("value", [
    0, 1, -1, 1767225600000, MAX_EVENT_TIME_MS, MAX_EVENT_TIME_MS + 1, MIN_EVENT_TIME_MS - 1, 10**30, -10**30,
    True, False, _SubInt(5), _SubInt(-5), Decimal("1767225600000"), "2026-01-01T00:00:00Z",
])
def test_an_epoch_millisecond_time_is_read_as_its_definition(value):
    from streams.wire.models import parse_event_time
    assert outcome(parse_event_time, value) == outcome(reference_parse_event_time, value)
