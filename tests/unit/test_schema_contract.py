"""The JSON Schemas are the contract: a record value the worker admits is valid by
its topic's schema, and a value valid by the schema is admitted, in both directions
and on every bound (decimal grammar, ranges, places, magnitude, lengths, times).

The two oracles are independent of each other:
- the worker: `wire.admission.admit_record`, what the worker calls on a record;
- the schema: the checked-in file under topics/schemas/, validated by the
  `jsonschema` library (draft 2020-12, formats asserted). The instance is the
  record's JSON with its numbers as the decimals they spell (JSON Schema's numbers
  are mathematical, not binary floats; `integer` is any number with no fraction,
  as the specification says). A string holding a lone surrogate (a "\\ud800"
  escape) is not Unicode text, which a JSON Schema describes: refused before.

Values come from the schema itself (hypothesis-jsonschema) and from strategies
around each bound, planted one field at a time into a valid message.
"""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.errors import InvalidMessage
from streams.wire import decimals, schemas
from streams.wire.admission import admit_record
from streams.wire.roles import INPUTS

MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, written out here rather than imported


def _integer(checker: Any, instance: Any) -> bool:
    if isinstance(instance, bool):
        return False
    if isinstance(instance, Decimal):
        return instance.is_finite() and instance == instance.to_integral_value()
    return isinstance(instance, int)


def _multiple_of(validator: Any, divisor: Any, instance: Any, schema: Any) -> Any:
    # the library's own keyword, in exact arithmetic (it takes the remainder in the
    # caller's decimal context, which cannot hold 1E+400 / 1E-18)
    if validator.is_type(instance, "number") and (Fraction(instance) / Fraction(divisor)).denominator != 1:
        yield jsonschema.ValidationError(f"{instance} is not a multiple of {divisor}")


_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _integer)
_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_TYPES,
                                          validators={"multipleOf": _multiple_of})
_ROLE_OF = {"instrument": "instruments", "signal": "signals", "fill": "fills", "control": "controls"}


def _validator(name: str) -> Any:
    schema = json.loads(schemas.path(name).read_text(), parse_float=Decimal)
    return _Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


_VALIDATORS = {name: _validator(name) for name in _ROLE_OF}


def _unicode(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_unicode(k) and _unicode(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_unicode(v) for v in value)
    return True


def schema_accepts(name: str, raw: bytes) -> bool:
    try:
        instance = decimals.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return False
    if not _unicode(instance):
        return False
    if name == "instrument" and isinstance(instance, dict) and isinstance(instance.get("legs"), list):
        # the one rule JSON Schema cannot state (the schema's description says it)
        names = [leg.get("venue_symbol") for leg in instance["legs"] if isinstance(leg, dict)]
        if len(set(map(repr, names))) != len(names):
            return False
    return _VALIDATORS[name].is_valid(instance)


def worker_admits(name: str, raw: bytes) -> tuple[bool, str]:
    role = _ROLE_OF[name]
    key_field = INPUTS[role][1]
    try:
        data = json.loads(raw)
        key = data.get(key_field) if isinstance(data, dict) else None
        key_bytes = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else b""
    except ValueError:
        key_bytes = b""
    try:
        admit_record(role, key_bytes, raw, None, 0)
    except InvalidMessage as exc:
        return False, f"{exc.code} {exc.detail}"
    return True, "admitted"


def assert_agree(name: str, raw: bytes) -> None:
    admitted, why = worker_admits(name, raw)
    valid = schema_accepts(name, raw)
    assert valid == admitted, f"{name} {raw!r}: schema {'accepts' if valid else 'refuses'}, worker: {why}"


# -- valid messages to plant values into ---------------------------------------

BASES: dict[str, list[dict[str, Any]]] = {
    "signal": [{"signal_id": "s-1", "portfolio_id": "p1", "symbol": "ETH-USD", "side": "buy", "score": "0.9",
                "price": "2500", "ts": "2026-01-01T00:00:00Z"},
               {"signal_id": "s-2", "portfolio_id": "p1", "symbol": "ETH-USD", "side": "sell", "price": "2500",
                "ts": 1_767_225_600_000, "intent": "reduce", "reduce_fraction": "0.5"}],
    "instrument": [{"symbol": "ETH-BASIS", "group": "ETH", "legs": [
        {"venue_symbol": "ETHUSDT", "side": "buy", "qty_step": "0.001", "min_qty": "0.001", "max_qty": "900",
         "min_notional": "5", "max_notional": "1000000"},
        {"venue_symbol": "ETH-USDT-SWAP", "side": "sell", "kind": "linear", "contract_size": "0.1",
         "qty_step": "0.01", "min_qty": "0", "max_qty": None, "min_notional": "0"}]}],
    "fill": [{"event_id": "f-1", "portfolio_id": "p1", "ts": "2026-01-01T00:00:00.123+01:00", "type": "order_filled",
              "order_id": "o-1", "symbol": "ETH-USD", "qty": "0.01", "price": "2500", "final": True,
              "venue_symbol": "ETHUSDT"},
             {"event_id": "f-2", "portfolio_id": "p1", "ts": 1_767_225_600_000, "type": "position_closed",
              "symbol": "ETH-USD", "qty": "0.01", "price": "2500", "realized_pnl": "-3.6"},
             {"event_id": "f-3", "portfolio_id": "p1", "ts": 0, "type": "order_canceled", "order_id": "o-1"}],
    "control": [{"command_id": "c-1", "portfolio_id": "p1", "ts": "2026-01-01T00:00:00Z", "type": "adjust_equity",
                 "operator": "alice", "reason": "deposit", "amount": "-25000"},
                {"command_id": "c-2", "portfolio_id": "p1", "ts": MAX_MS, "type": "resume", "operator": "alice",
                 "reason": "ok", "clear": ["max_drawdown"]},
                {"command_id": "c-3", "portfolio_id": "p1", "ts": 0, "type": "halt", "operator": "bob",
                 "reason": "outage", "mode": "reduce_only"}],
}

DECIMAL_FIELDS = {"price", "score", "qty", "qty_step", "min_qty", "max_qty", "min_notional", "max_notional",
                  "contract_size", "reduce_fraction", "realized_pnl", "amount"}


def test_the_base_messages_are_admitted_and_valid():
    for name, messages in BASES.items():
        for message in messages:
            raw = json.dumps(message).encode()
            assert worker_admits(name, raw)[0] and schema_accepts(name, raw), (name, message)


# -- values around each bound, as JSON text ----------------------------------------

def _text(value: Any) -> str:
    return json.dumps(value)


EDGE_DECIMALS = [
    "0", "-0", "0.0", "-0.000", "0e0", "0E-18", "0e-19", "0e15", "0e16", "-0e5", "1", "-1", "1.0", "1e0", "1E+0",
    "1.000e-0", "1.0000000000000000000000", "0.999999999999999999", "0.9999999999999999999", "1.000000000000000001",
    "2", "0.5", "5", "1e15", "9.999999999999999e15", "9.9999999999999999e15", "1e16", "1E+16", "-1e15",
    "9999999999999999", "9999999999999999.999999999999999999", "10000000000000000", "-9999999999999999",
    "1e20", "0.000000000000000001", "0.0000000000000000001", "0.0000000000000000010", "1e-18", "1E-18",
    "1.0e-18", "1e-19", "1.5e-17", "1.55e-17", "1.50E+3", "1E-8", "1e-0008", "1e+015", "10e3", "0.5e0",
    "100e-20", "1_00", "1_000.5", "\u0661", "\u0661\u0662", "\uff11", "1\u00b2", " 1", "1 ", "+1", "01", "1.", ".1",
    "", "-", "NaN", "Infinity", "-Infinity", "0x10", "1e", "1e+", "--1", "1..2", "e5", "1E400", "1e-400",
]
EDGE_DECIMAL_NUMBERS = [  # JSON numbers, not strings
    "0", "-0", "0.0", "1", "1.0", "1e0", "-1", "0.5", "1.5", "2", "5", "9999999999999999", "10000000000000000",
    "9999999999999999.999999999999999999", "9999999999999999.9999999999999999999", "1e15", "1e16", "1E+16",
    "0.000000000000000001", "0.0000000000000000001", "1e-18", "1e-19", "1.5e-17", "1.55e-17", "1e20", "1e-400",
    "1E400", str(2**63), str(2**64), "-1e16", "-9999999999999999", "true", "false", "null", "[]", "{}",
]
EDGE_TIMES = [_text(t) for t in [
    "2026-01-01T00:00:00Z", "2026-01-01t00:00:00z", "2026-01-01 00:00:00Z", "2026-01-01T00:00:00", "2026-01-01",
    "1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000+00:00", "1970-01-01T00:00:00-00:00", "1970-01-01T00:30:00+00:01",
    "1970-01-01T05:00:00+01:00", "1970-01-01T00:00:00-23:59", "1969-12-31T23:59:59.999Z", "1969-12-31T23:00:00-01:00",
    "1970-01-02T00:00:00+23:59", "9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.9999999Z",
    "9999-12-31T23:00:00+01:00", "9999-12-31T00:00:00-01:00", "9999-12-31T23:59:59-00:00", "9999-12-30T23:00:00-01:00",
    "10000-01-01T00:00:00Z", "0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "2024-02-29T00:00:00Z",
    "2023-02-29T00:00:00Z", "2100-02-29T00:00:00Z", "2000-02-29T00:00:00Z", "1972-02-29T12:00:00Z",
    "2026-04-31T00:00:00Z", "2026-12-31T00:00:00Z", "2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z",
    "2026-01-00T00:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T23:60:00Z", "2026-01-01T23:59:60Z",
    "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00+23:60", "2026-01-01T00:00:00+2300", "2026-01-01T00:00:00.Z",
    "2026-01-01T00:00:00,5Z", "\u0662026-01-01T00:00:00Z", "2026-01-01T00:00:00Z ", "1767225600000",
]] + ["0", "-1", "1", str(MAX_MS), str(MAX_MS + 1), str(2**63 - 1), str(2**63), str(2**64), "1.767e12",
      "1767225600000.0", "1767225600000.5", "1.7672256e+12", "1e18", "1e19", "1e400", "-0", "0.0", "1e-5", "true",
      "null", "[]"]
EDGE_IDS = [_text(t) for t in ["", "a", "a" * 256, "a" * 257, "\u00e9" * 256, "\u00e9" * 257, "\U0001f600" * 256,
                               "\U0001f600" * 257, "a\x00", "a\x1f", "a\x7f", "a\x80", "a\n", "\t", " ", "a b",
                               "\u2028", "\ud800", "\udfff", "x\ud83d\ude00"]] + ["1", "null", "true", "[]"]
EDGE_OTHERS = ["null", "true", "false", "0", "1", '""', '"buy"', '"sell"', '"BUY"', '"open"', '"reduce"', '"spot"',
               '"linear"', '"inverse"', '"full"', '"reduce_only"', '["max_drawdown"]', '["max_drawdown","max_drawdown"]',
               "[]", "{}", '"x"', '"' + "r" * 1024 + '"', '"' + "r" * 1025 + '"']


def _decimal_texts() -> st.SearchStrategy[str]:
    mantissa = st.from_regex(r"-?(0|[1-9][0-9]{0,17})(\.[0-9]{0,20})?", fullmatch=True)
    exponent = st.one_of(st.just(""), st.builds(lambda e, x: f"{e}{x}", st.sampled_from(["e", "E", "e+", "e-", "E-"]),
                                                st.integers(0, 25).map(str) | st.sampled_from(["00", "018", "015"])))
    built = st.builds(lambda m, x: m + x, mantissa, exponent)
    return st.one_of(st.sampled_from(EDGE_DECIMALS).map(_text), built.map(_text), st.sampled_from(EDGE_DECIMAL_NUMBERS),
                     built.filter(lambda t: t[:1] != "-" or t[1:2].isdigit()))


def _values_for(field: str) -> st.SearchStrategy[str]:
    if field in DECIMAL_FIELDS:
        kind = _decimal_texts()
    elif field == "ts":
        kind = st.one_of(st.sampled_from(EDGE_TIMES), st.integers(-10, MAX_MS + 10).map(str),
                         st.datetimes(timezones=st.timezones() | st.just(None)).map(lambda d: _text(d.isoformat())))
    elif field in ("side", "type", "intent", "kind", "mode", "clear", "final", "reason", "legs", "group"):
        kind = st.sampled_from(EDGE_OTHERS + EDGE_IDS)
    else:
        kind = st.sampled_from(EDGE_IDS)
    return st.one_of(kind, st.sampled_from(EDGE_OTHERS))


_HOLE = "\u0000HOLE\u0000"


def _planted(message: dict[str, Any], path: tuple[Any, ...], text: str | None) -> bytes:
    """`message` as JSON with the value at `path` replaced by the JSON text `text`
    (None: the field removed)."""
    copy = json.loads(json.dumps(message))
    where = copy
    for step in path[:-1]:
        where = where[step]
    if text is None:
        where.pop(path[-1], None)
    else:
        where[path[-1]] = _HOLE
    return json.dumps(copy, ensure_ascii=False).replace(json.dumps(_HOLE, ensure_ascii=False), text or "").encode()


def _paths(message: dict[str, Any]) -> list[tuple[Any, ...]]:
    paths: list[tuple[Any, ...]] = [(key,) for key in message]
    for n, leg in enumerate(message.get("legs") or []):
        paths += [("legs", n, key) for key in leg]
    return paths


@st.composite
def planted(draw: Any, name: str) -> bytes:
    message = draw(st.sampled_from(BASES[name]))
    path = draw(st.sampled_from(_paths(message)))
    text = draw(st.one_of(_values_for(path[-1]), st.none()))
    return _planted(message, path, text)


@pytest.mark.parametrize("name", sorted(BASES))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_values_around_every_bound_are_admitted_exactly_when_valid(name, data):
    assert_agree(name, data.draw(planted(name)))


@pytest.mark.parametrize("name", sorted(BASES))
def test_every_edge_value_in_every_field_is_admitted_exactly_when_valid(name):
    """Each listed edge value in each field of each base message: no sampling."""
    checked = 0
    for message in BASES[name]:
        for path in _paths(message):
            field = path[-1]
            if field in DECIMAL_FIELDS:
                edges = [_text(t) for t in EDGE_DECIMALS] + EDGE_DECIMAL_NUMBERS
            else:
                edges = EDGE_TIMES if field == "ts" else EDGE_IDS + EDGE_OTHERS
            for text in edges + [None]:
                assert_agree(name, _planted(message, path, text))
                checked += 1
    assert checked > 100


# -- values the schema itself generates --------------------------------------------
# (hypothesis-jsonschema 0.23.1 no longer runs on this hypothesis: a walk of the
# keywords these schemas use, each value drawn from what its keywords allow)

def _from_schema(node: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "$ref" in node:
        return st.deferred(lambda: _from_schema(defs[node["$ref"].rsplit("/", 1)[1]], defs))
    for union in ("anyOf", "oneOf"):
        if union in node:
            return st.one_of([_from_schema(branch, defs) for branch in node[union]])
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if kind == "string":
        if "pattern" in node:
            return st.from_regex(node["pattern"], fullmatch=True)
        alphabet = st.characters(exclude_categories=("Cs", "Cc") if "not" in node else ("Cs",))
        return st.text(alphabet, min_size=node.get("minLength", 0), max_size=node.get("maxLength", 40))
    if kind == "integer":
        return st.integers(node.get("minimum"), node.get("maximum"))
    if kind == "number":
        return st.decimals(node.get("minimum", node.get("exclusiveMinimum")),
                           node.get("maximum", node.get("exclusiveMaximum")), places=18,
                           allow_nan=False, allow_infinity=False).map(lambda d: Decimal(format(d, "f")))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        items = _from_schema(node.get("items", {"type": "null"}), defs)
        return st.lists(items, min_size=node.get("minItems", 0), max_size=node.get("maxItems", 3))
    if kind == "object":
        properties = node.get("properties", {})
        required = set(node.get("required", ()))
        return st.fixed_dictionaries({k: _from_schema(v, defs) for k, v in properties.items() if k in required},
                                     optional={k: _from_schema(v, defs) for k, v in properties.items()
                                               if k not in required})
    return st.just(None)


def _dumped(value: Any) -> bytes:
    """`value` as JSON, each Decimal written as the JSON number its text spells."""
    marks: list[str] = []

    def mark(item: Any) -> Any:
        if isinstance(item, Decimal):
            marks.append(str(item))
            return f"\u0000{len(marks) - 1}\u0000"
        if isinstance(item, dict):
            return {k: mark(v) for k, v in item.items()}
        if isinstance(item, list):
            return [mark(v) for v in item]
        return item
    raw = json.dumps(mark(value), ensure_ascii=False)
    for n, number in enumerate(marks):
        raw = raw.replace(json.dumps(f"\u0000{n}\u0000", ensure_ascii=False), number)
    return raw.encode()


@pytest.mark.parametrize("name", sorted(BASES))
@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_messages_drawn_from_the_schema_are_admitted_exactly_when_valid(name, data):
    schema = json.loads(schemas.path(name).read_text())
    raw = _dumped(data.draw(_from_schema(schema, schema.get("$defs", {}))))
    assert_agree(name, raw)


# -- the issue's own examples ------------------------------------------------------

@pytest.mark.parametrize("price, score", [('"0"', '"0.9"'), ('"2500"', '"5"'), ('"1e20"', '"0.9"'),
                                          ('"2500"', '"1.0000000000000000001"'), ('"-1"', '"0.9"')])
def test_a_signal_the_worker_dead_letters_is_invalid_by_its_schema(price, score):
    raw = _planted(_planted_dict(price, score), ("ts",), '"2026-01-01T00:00:00Z"')
    assert worker_admits("signal", raw)[0] is False
    assert schema_accepts("signal", raw) is False


def _planted_dict(price: str, score: str) -> dict[str, Any]:
    message = dict(BASES["signal"][0])
    return json.loads(_planted(json.loads(_planted(message, ("price",), price)), ("score",), score))
