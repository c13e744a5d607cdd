"""The wire messages (JSON, UTF-8) as pydantic v2 models, with DESIGN.md's exact field names.

Decimals are accepted as strings or JSON numbers (parsed straight to Decimal by
`decimals.loads`, never through float) and written as canonical strings. `ts` is
event time, accepted as RFC 3339 (with an explicit offset) or epoch milliseconds,
held as integer epoch milliseconds and written as RFC 3339 UTC.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from decimal import Decimal
from typing import Annotated, Any, Literal, NotRequired, Required, TypeVar, Union

from typing_extensions import TypedDict

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    TypeAdapter,
    ValidationError,
    model_validator,
    with_config,
)

from pydantic_core import PydanticKnownError, core_schema

from streams.wire import decimals
from streams.errors import InvalidMessage, field_errors

# A JSON Schema pattern is ECMA 262, where `$` is the end of the text; in Python's
# and Java's dialects it also matches before a final newline ("1\n"). A pattern
# anchored with `$` comes with this, so that every validator refuses that newline.
_NO_NEWLINE = {"not": {"pattern": "\n"}}
_DECIMAL_BOUNDS = (f"below 1e16 in magnitude, at most {decimals.MAX_PLACES} decimal places; written as a string "
                   f"(plain notation, or scientific with an exponent from {decimals.MIN_EXPONENT} to "
                   f"{decimals.MAX_EXPONENT}), read from such a string or a JSON number")


class WireDecimal:
    """A wire decimal field: its bounds, declared once (`gt`/`ge` 0, `le` 1), make
    both its validator (`_wire_decimal`) and its JSON Schema, a string matching
    `decimals.decimal_pattern` for those bounds (what the product writes) or on
    input also a JSON number with the same bounds: `multipleOf` 1e-18 is the
    places rule, exact in JSON Schema's arithmetic (numbers are decimals there)."""

    def __init__(self, gt: int | None = None, ge: int | None = None, le: int | None = None) -> None:
        if (gt, ge) not in ((None, None), (0, None), (None, 0)) or le not in (None, 1):
            raise ValueError("a wire decimal is bounded below by > 0 or >= 0 and above by <= 1, if at all")
        self.gt, self.ge, self.le = gt, ge, le
        self.validate = _wire_decimal(gt, ge, le)  # one per type, shared by its fields

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        return core_schema.no_info_plain_validator_function(
            self.validate,
            serialization=core_schema.plain_serializer_function_ser_schema(decimals.canonical))

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        minimum = ">0" if self.gt is not None else ">=0" if self.ge is not None else None
        bounds = [f"{'>' if self.gt is not None else '>='} 0"] if minimum else []
        bounds += ["<= 1"] if self.le is not None else []
        text = "A decimal" + (f" {' and '.join(bounds)}" if bounds else "") + f": {_DECIMAL_BOUNDS}."
        string = {"type": "string", "pattern": decimals.decimal_pattern(minimum, self.le is not None), **_NO_NEWLINE}
        if handler.mode == "serialization":
            return {**string, "description": text}
        number: dict[str, Any] = {"type": "number", "multipleOf": float(f"1e-{decimals.MAX_PLACES}"),
                                  "exclusiveMinimum": -10 ** (decimals.MAX_ADJUSTED_EXPONENT + 1),
                                  "exclusiveMaximum": 10 ** (decimals.MAX_ADJUSTED_EXPONENT + 1)}
        if minimum is not None:
            number["exclusiveMinimum" if self.gt is not None else "minimum"] = 0
            if self.ge is not None:
                number.pop("exclusiveMinimum")
        if self.le is not None:
            number.pop("exclusiveMaximum")
            number["maximum"] = 1
        return {"anyOf": [string, number], "description": text}


def _wire_decimal(gt: int | None = None, ge: int | None = None, le: int | None = None) -> Any:
    """A wire decimal field's one validator: `decimals.wire_decimal` (conversion and
    bounds), then the field's own bounds, in that order and with the errors that
    `BeforeValidator(to_decimal)`, `AfterValidator(bounded)` and `Field(gt=, ge=, le=)`
    raise in turn; one call per field instead of one per rule.

    A string it accepted is remembered with its Decimal (the same text makes the same
    Decimal, in any context: conversion from text is exact): prices and scores recur."""
    known: dict[str, Decimal] = {}

    def validate(value: Any) -> Decimal:
        if type(value) is str:
            seen = known.get(value)
            if seen is not None:
                return seen
        result = decimals.wire_decimal(value)
        if type(result) is not Decimal:  # a Decimal subclass from a Python caller, as pydantic's decimal type
            result = Decimal(result)
        if gt is not None and not result > gt:
            raise PydanticKnownError("greater_than", {"gt": gt})
        if ge is not None and not result >= ge:
            raise PydanticKnownError("greater_than_equal", {"ge": ge})
        if le is not None and not result <= le:
            raise PydanticKnownError("less_than_equal", {"le": le})
        if type(value) is str:
            if len(known) >= _KNOWN_KEPT:  # forgotten all at once past the bound
                known.clear()
            known[value] = result
        return result

    return validate


_KNOWN_KEPT = 4096
Dec = Annotated[Decimal, WireDecimal()]
PositiveDec = Annotated[Decimal, WireDecimal(gt=0)]
NonNegativeDec = Annotated[Decimal, WireDecimal(ge=0)]
Score = Annotated[Decimal, WireDecimal(ge=0, le=1)]
ReduceFraction = Annotated[Decimal, WireDecimal(gt=0, le=1)]
Side = Literal["buy", "sell"]
# An identifier: 1..256 characters, no control characters (order ids are derived
# from portfolio and signal ids joined by one, `engine.order_id_for`).
_CONTROL = r"\x00-\x1f\x7f"


class _NoControl:
    """An identifier's JSON Schema says "no control character" unanchored (`not` a
    pattern that finds one), as every regular-expression dialect reads it alike."""

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        generated = handler(schema)
        generated.pop("pattern")
        return {**generated, "not": {"pattern": f"[{_CONTROL}]"}}


Id = Annotated[str, Field(min_length=1, max_length=256, pattern=f"^[^{_CONTROL}]+$"), _NoControl()]


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
# Event times the product accepts, and so can write back (DESIGN.md, closure):
# from the epoch to the last millisecond of year 9999 UTC. Below, a time Python
# cannot format as RFC 3339 UTC; above, one no 64-bit reader takes either.
MIN_EVENT_TIME_MS = 0
MAX_EVENT_TIME_MS = (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc) - _EPOCH) // timedelta(
    milliseconds=1)
# RFC 3339 section 5.6 date-time (its ABNF: "T" or "t" between date and time),
# ASCII digits only; fractions past milliseconds are truncated.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_FIRST_DAY, _LAST_DAY = "1970-01-01", "9999-12-31"  # of the range, as written with their offset


def _event_time_pattern() -> str:
    """The JSON Schema pattern of the RFC 3339 times `parse_event_time` accepts: a real
    calendar date (leap years included) from 1970 to 9999, hours 00-23, minutes and
    seconds 00-59, an offset up to 23:59; on the range's first day no offset east of
    UTC, on its last none west (the rule `parse_event_time` applies, so that the
    pattern is exact: a regular expression cannot add an offset to a time)."""
    assert (format_event_time(MIN_EVENT_TIME_MS)[:10], format_event_time(MAX_EVENT_TIME_MS)[:10]) == (
        _FIRST_DAY, _LAST_DAY)
    d31, d30, d28 = "(?:0[1-9]|[12][0-9]|3[01])", "(?:0[1-9]|[12][0-9]|30)", "(?:0[1-9]|1[0-9]|2[0-8])"
    days = f"(?:0[469]|11)-{d30}|02-{d28}"
    any_day = f"(?:0[13578]|1[02])-{d31}|{days}"
    years = "19(?:7[1-9]|[89][0-9])|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8]"
    leap_years = "19(?:7[26]|8[048]|9[26])|[2-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[3579][26])00"
    dates = (f"(?:{years})-(?:{any_day})|(?:{leap_years})-02-29|1970-(?:01-(?:0[2-9]|[12][0-9]|3[01])|"
             f"(?:0[3578]|1[02])-{d31}|{days})|9999-(?:(?:0[13578]|10)-{d31}|12-{d30}|{days})")
    clock = r"[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
    offset = "(?:[01][0-9]|2[0-3]):[0-5][0-9]"
    return (f"^(?:(?:{dates}){clock}(?:[Zz]|[+-]{offset})|{_FIRST_DAY}{clock}(?:[Zz]|[+-]00:00|-{offset})"
            f"|{_LAST_DAY}{clock}(?:[Zz]|[+-]00:00|\\+{offset}))$")


def _in_bounds(epoch_ms: int) -> int:
    if epoch_ms < MIN_EVENT_TIME_MS:
        raise ValueError("must not be before 1970-01-01T00:00:00Z (epoch milliseconds must not be negative)")
    if epoch_ms > MAX_EVENT_TIME_MS:
        raise ValueError(f"must not be after 9999-12-31T23:59:59.999Z (epoch milliseconds at most {MAX_EVENT_TIME_MS})")
    return epoch_ms


def parse_event_time(value: Any) -> int:
    """Event time in epoch milliseconds from an RFC 3339 string (with an offset) or
    an integer of epoch ms, between `MIN_EVENT_TIME_MS` and `MAX_EVENT_TIME_MS`.
    Raises ValueError naming the rule that failed."""
    if type(value) is int and MIN_EVENT_TIME_MS <= value <= MAX_EVENT_TIME_MS:  # the usual input, as is
        return value
    if isinstance(value, bool):
        raise ValueError("must be RFC 3339 or epoch milliseconds")
    if isinstance(value, Decimal):
        # a JSON number written with a fraction or exponent ("1.767e12"); bounded
        # before int() so that "1e999999999" costs nothing
        if not value.is_finite() or value != value.to_integral_value():
            raise ValueError("epoch milliseconds must be a whole number")
        if value.adjusted() > 18:
            raise ValueError(f"must not be after 9999-12-31T23:59:59.999Z (epoch milliseconds at most {MAX_EVENT_TIME_MS})")
        value = int(value)
    if isinstance(value, int):
        return _in_bounds(value)
    if isinstance(value, str):
        match = _RFC3339.fullmatch(value)
        if match is None:
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise ValueError(f"is not an RFC 3339 time with an offset (such as 2026-01-01T00:00:00Z): {shown!r}")
        year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
        try:
            days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_DAY
            clock = time(int(hour), int(minute), int(second))
        except ValueError as exc:
            raise ValueError(f"is not a valid time: {exc}") from None
        offset_s = 0 if zulu is not None else (int(off_h) * 3600 + int(off_m) * 60) * (-1 if sign == "-" else 1)
        if zulu is None and (int(off_h) > 23 or int(off_m) > 59):
            raise ValueError("UTC offset must be at most 23:59")
        # integer arithmetic: no datetime can overflow at either end of the range
        seconds = days * 86_400 + clock.hour * 3600 + clock.minute * 60 + clock.second - offset_s
        epoch_ms = _in_bounds(seconds * 1000 + int((fraction or "0").ljust(3, "0")[:3]))
        # the date as written is in the range too, and on its edge days the offset
        # cannot carry the time out of it: a rule on the text (`_event_time_pattern`)
        if value[:10] < _FIRST_DAY:
            raise ValueError(f"must not be before 1970-01-01T00:00:00Z, nor written on a date before {_FIRST_DAY}")
        if offset_s and value[:10] == (_FIRST_DAY if offset_s > 0 else _LAST_DAY):
            raise ValueError(f"on {value[:10]} the offset must be Z or {'west' if offset_s > 0 else 'east'} of UTC "
                             f"(the range is 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z)")
        return epoch_ms
    raise ValueError("must be RFC 3339 or epoch milliseconds")


def parse_time(text: str | None) -> int | None:
    """A time a user types (`--from`, `--to`): RFC 3339 or epoch milliseconds, as
    epoch ms; None for None. Raises what `parse_event_time` raises."""
    if text is None:
        return None
    if text.isdigit():
        return parse_event_time(int(text))
    # a typed time may have a space between date and time (RFC 3339's note), the wire not
    return parse_event_time(text[:10] + "T" + text[11:] if text[10:11] == " " else text)


def format_event_time(epoch_ms: int) -> str:
    """RFC 3339 UTC with millisecond precision, e.g. 2026-01-01T00:00:00.000Z.
    Defined for every time `parse_event_time` accepts."""
    text = _FORMATTED.get(epoch_ms)
    if text is None:
        # a decision writes the same few times several times (signal, clock, order):
        # keep the recent ones, forgetting them all at once past the bound
        if len(_FORMATTED) >= _FORMATTED_KEPT:
            _FORMATTED.clear()
        seconds, millis = divmod(epoch_ms, 1000)
        text = _FORMATTED[epoch_ms] = _second(seconds) + _MILLIS[millis]
    return text


_FORMATTED: dict[int, str] = {}
_FORMATTED_KEPT = 4096
_MINUTES = tuple(f"T{minute // 60:02d}:{minute % 60:02d}:" for minute in range(1440))  # of the day
_SECONDS = tuple(f"{second:02d}" for second in range(60))
_MILLIS = tuple(f".{millis:03d}Z" for millis in range(1000))


@lru_cache(maxsize=4096)
def _second(epoch_s: int) -> str:
    # inputs of one second share it; integer arithmetic and tables otherwise, with the
    # calendar date the only strftime, once a day
    days, seconds = divmod(epoch_s, 86_400)
    minutes, seconds = divmod(seconds, 60)
    return _day(days) + _MINUTES[minutes] + _SECONDS[seconds]


@lru_cache(maxsize=1024)
def _day(epoch_day: int) -> str:
    return date.fromordinal(_EPOCH_DAY + epoch_day).strftime("%Y-%m-%d")


class WireTime:
    """The JSON Schema of an event time: RFC 3339 with an explicit offset or epoch
    milliseconds on input, RFC 3339 UTC with milliseconds on output; 1970 to 9999."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        text = ("Event time from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z: RFC 3339 with an explicit "
                "offset, or epoch milliseconds; written as RFC 3339 UTC with milliseconds "
                "(2026-01-01T00:00:00.000Z).")
        string = {"type": "string", "format": "date-time", "pattern": _event_time_pattern(), **_NO_NEWLINE}
        if handler.mode == "serialization":
            return {**string, "description": text}
        return {"anyOf": [string, {"type": "integer", "minimum": MIN_EVENT_TIME_MS, "maximum": MAX_EVENT_TIME_MS}],
                "description": text}


EventTime = Annotated[int, BeforeValidator(parse_event_time), PlainSerializer(format_event_time), WireTime()]


class Message(BaseModel):
    """Inputs ignore unknown fields and are immutable once decoded."""

    model_config = ConfigDict(extra="ignore", frozen=True)


LegKind = Literal["spot", "linear", "inverse"]


class Leg(Message):
    """One leg of an instrument, in its venue's units (DESIGN.md, "Messages").

    `kind` says what the leg's `qty` counts: `spot` base units (Binance spot
    BTCUSDT: BTC); `linear` contracts of `contract_size` base units (OKX `ctVal`:
    BTC-USDT-SWAP 0.01 BTC, CRV-USDT-SWAP 10 CRV, https://www.okx.com/docs-v5/en/
    #public-data-rest-api-get-instruments); `inverse` contracts of `contract_size`
    quote units (Binance COIN-M `contractSize`: 100 USD for BTCUSD_PERP, 10 USD for
    the others, https://developers.binance.com/docs/derivatives/coin-margined-futures/
    market-data/rest-api/Exchange-Information; Deribit BTC-PERPETUAL 10 USD).
    `qty_step`, `min_qty` and `max_qty` are in the leg's units; `min_notional` and
    `max_notional` in quote currency. A spot leg has no contract: its
    `contract_size` must be 1 (an instrument with another is refused)."""

    # `_sizable` in the JSON Schema: a spot leg (`kind` spot or absent) has contract_size 1
    model_config = ConfigDict(extra="ignore", frozen=True, json_schema_extra={
        "if": {"properties": {"kind": {"const": "spot"}}},
        "then": {"properties": {"contract_size": {"anyOf": [{"const": 1}, {"type": "string",
                                                                          "pattern": decimals.ONE_PATTERN}]}}}})

    venue_symbol: Id
    side: Side
    qty_step: PositiveDec
    min_qty: NonNegativeDec = Decimal(0)
    max_qty: PositiveDec | None = None
    min_notional: NonNegativeDec = Decimal(0)
    max_notional: PositiveDec | None = None
    """The exchange's maximum order value in USD (Binance's NOTIONAL filter, `maxNotional`)."""
    kind: LegKind = "spot"
    contract_size: PositiveDec = Decimal(1)

    @model_validator(mode="after")
    def _sizable(self) -> "Leg":
        # a spot quantity is base units: a multiplier there means the producer meant a
        # contract leg, and sizing it by guess would be off by that factor
        if self.kind == "spot" and self.contract_size != 1:
            raise ValueError(f"contract_size {decimals.canonical(self.contract_size)} on a spot leg: a spot leg "
                             f"trades base units (contract_size 1); give kind linear or inverse for contracts")
        return self


# Example instruments with real venue figures (README, "Messages"): Binance spot
# BTCUSDT (LOT_SIZE stepSize 0.00001, NOTIONAL minNotional 5) hedged with OKX
# BTC-USDT-SWAP (linear, ctVal 0.01 BTC, lotSz 0.01, minSz 0.01:
# https://www.okx.com/docs-v5/en/#public-data-rest-api-get-instruments), and with
# Binance COIN-M BTCUSD_PERP (inverse, contractSize 100 USD, step 1 contract:
# https://developers.binance.com/docs/derivatives/coin-margined-futures/market-data/rest-api/Exchange-Information).
EXAMPLE_INSTRUMENTS: tuple[dict[str, Any], ...] = (
    {"symbol": "BTC-OKX-BASIS", "legs": [
        {"venue_symbol": "BTCUSDT", "side": "buy", "kind": "spot", "qty_step": "0.00001", "min_qty": "0.00001",
         "max_qty": "9000", "min_notional": "5"},
        {"venue_symbol": "BTC-USDT-SWAP", "side": "sell", "kind": "linear", "contract_size": "0.01",
         "qty_step": "0.01", "min_qty": "0.01", "max_qty": None, "min_notional": "0"}]},
    {"symbol": "BTC-COINM-BASIS", "legs": [
        {"venue_symbol": "BTCUSDT", "side": "buy", "kind": "spot", "qty_step": "0.00001", "min_qty": "0.00001",
         "max_qty": "9000", "min_notional": "5"},
        {"venue_symbol": "BTCUSD_PERP", "side": "sell", "kind": "inverse", "contract_size": "100",
         "qty_step": "1", "min_qty": "1", "max_qty": None, "min_notional": "0"}]},
)


class Instrument(Message):
    model_config = ConfigDict(extra="ignore", frozen=True, json_schema_extra={"examples": list(EXAMPLE_INSTRUMENTS)})

    symbol: Id
    # `_one_base` in the JSON Schema: some leg is not inverse. That no two legs share a
    # venue_symbol, JSON Schema cannot say (uniqueItems compares whole legs): the
    # description says it, and tests/unit/test_schema_contract.py checks it beside.
    legs: Annotated[tuple[Leg, ...], Field(min_length=1, max_length=8, json_schema_extra={
        "contains": {"not": {"required": ["kind"], "properties": {"kind": {"const": "inverse"}}}},
        "description": "At least one leg not inverse; no two legs with the same venue_symbol."})]
    group: Id | None = None
    """The key of group exposure caps (`group_caps`): an underlying (`BTC`) or a sector; None: in no group."""

    @model_validator(mode="after")
    def _one_base(self) -> "Instrument":
        # the legs hold one base quantity: an instrument whose every leg is inverse has
        # no base leg to size, and sizing its contracts alone would leave the pair's
        # base quantity to rounding; and two legs of one venue symbol could not be
        # told apart by their fills
        if all(leg.kind == "inverse" for leg in self.legs):
            raise ValueError("legs: every leg is inverse: with no spot or linear leg to step the base quantity, "
                             "the order's base_qty would be a guess; add the spot or linear leg")
        names = [leg.venue_symbol for leg in self.legs]
        if len(set(names)) != len(names):
            raise ValueError("legs: two legs name the same venue_symbol; a fill could not say which it is of")
        return self


class Signal(Message):
    signal_id: Id
    portfolio_id: Id
    symbol: Id
    side: Side
    score: Score | None = None
    """None: a generator in simple mode sent no score (sized by `unscored_signals`)."""
    price: PositiveDec
    ts: EventTime
    # written only when not the default, so an open signal reads as it always has
    intent: Annotated[Literal["open", "reduce"], Field(exclude_if=lambda v: v == "open")] = "open"
    """`reduce`: exit part or all of the held position in `symbol` (DESIGN.md, "Protections")."""
    reduce_fraction: Annotated[ReduceFraction, Field(exclude_if=lambda v: v == 1)] = Decimal(1)
    """With `intent: reduce`, the share of the held base quantity to exit, in (0, 1]."""


class FillEvent(Message):
    event_id: Id
    portfolio_id: Id
    ts: EventTime


class OrderFilled(FillEvent):
    type: Literal["order_filled"]
    order_id: Id
    symbol: Id
    qty: PositiveDec
    price: PositiveDec
    final: StrictBool = False
    venue_symbol: Id | None = None
    """The leg this fill is of, for a multi-leg order reported leg by leg; None: the whole order."""


class OrderCanceled(FillEvent):
    type: Literal["order_canceled"]
    order_id: Id


class PositionClosed(FillEvent):
    type: Literal["position_closed"]
    symbol: Id
    qty: PositiveDec
    price: PositiveDec
    realized_pnl: Dec


Fill = Annotated[Union[OrderFilled, OrderCanceled, PositionClosed], Field(discriminator="type")]


class Command(Message):
    """An operator command on the `controls` topic (DESIGN.md, "Operator controls")."""

    command_id: Id
    portfolio_id: Id
    ts: EventTime
    operator: Id
    reason: Annotated[str, Field(min_length=1, max_length=1024)]


class Halt(Command):
    """An operator's halt, until a `resume`. `mode` `full`: every new signal is
    rejected HALTED; `reduce_only` (NautilusTrader's REDUCING state): opens are
    rejected REDUCE_ONLY, reduce signals are sized."""

    type: Literal["halt"]
    mode: Literal["full", "reduce_only"] = "full"


class Resume(Command):
    """Lifts the operator's halt. The drawdown latch (MAX_DRAWDOWN) is a second,
    independent latch: it stays unless `clear` names `max_drawdown`, which clears
    it and re-arms the kill switch from the equity at that moment (with no latch
    tripped, `clear` releases nothing and the peak stays where it is)."""

    type: Literal["resume"]
    clear: Annotated[tuple[Literal["max_drawdown"], ...], Field(max_length=1)] = ()


class Release(Command):
    """Releases one order's reservation, when the execution engine lost its cancel."""

    type: Literal["release"]
    order_id: Id


class AdjustEquity(Command):
    """A deposit (> 0) or withdrawal (< 0) in USD: moves equity (and so the graduated
    base size and percentage caps), not streaks, trade counts or PnL. The peak the
    kill switch measures from scales by new / old equity, so the drawdown
    percentage is unchanged (DESIGN.md, "Operator controls"), through an emptied
    account too (`engine.state.adjusted_equity`)."""

    type: Literal["adjust_equity"]
    amount: Dec


class ResetClock(Command):
    """Sets the portfolio clock back to the command's `ts`, after an input stamped in
    the future moved it ahead (admitted before the broker bounded record timestamps,
    DESIGN.md "Production Kafka"): every later signal would otherwise be STALE_SIGNAL.
    Reservations, marks and the protections' event times (opens, losing closes, a loss
    guard pause) stamped after `ts` are restamped at `ts`."""

    type: Literal["reset_clock"]


Control = Annotated[Union[Halt, Resume, Release, AdjustEquity, ResetClock], Field(discriminator="type")]


class OrderLeg(BaseModel):
    """One leg of an order: `qty` in the leg's venue units (`kind`, `contract_size`,
    as in `Leg`)."""

    model_config = ConfigDict(frozen=True)

    venue_symbol: str
    side: Side
    qty: Dec
    kind: LegKind = "spot"
    contract_size: Dec = Decimal(1)


class Order(BaseModel):
    model_config = ConfigDict(frozen=True)

    order_id: str
    signal_id: str
    portfolio_id: str
    symbol: str
    side: Side
    qty: Dec
    """The base quantity (`base_qty`), as before legs carried units."""
    price: Dec
    notional: Dec
    """Quote notional: base_qty x price."""
    legs: tuple[OrderLeg, ...]
    ts: EventTime
    config_hash: str
    base_qty: Dec
    """The base quantity every leg holds (each leg's `qty` is in its venue's units)."""


Outcome = Literal["accepted", "rejected"]
# Every reason a decision can be rejected for: the engine (`engine.pipeline`), this
# model and the metrics use this one type.
RejectionReason = Literal[
    "DUPLICATE_SIGNAL", "HALTED", "MAX_DRAWDOWN", "UNKNOWN_INSTRUMENT", "STALE_SIGNAL", "NO_SCORE", "LOW_CONFIDENCE",
    "PAIR_CAP_REACHED", "EXPOSURE_CAP_REACHED", "BELOW_MIN_QTY", "BELOW_MIN_NOTIONAL", "ORDER_OUT_OF_BOUNDS",
    "NOTHING_TO_REDUCE", "COOLDOWN", "LOSS_GUARD", "RATE_LIMITED", "GROUP_CAP_REACHED",
    "REDUCE_ONLY", "EQUITY_EXHAUSTED", "HEDGE_MISMATCH",
]


class CanonicalDecimal:
    """The JSON Schema of a decimal a trace writes: `decimals.canonical`'s form (plain
    notation, no trailing zeros, "0" for zero), of any size: a trace shows the engine's
    exact intermediate values, which the wire bounds do not bound."""

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        return {"type": "string", "pattern": r"^(?:0|-?[1-9][0-9]*(?:\.[0-9]*[1-9])?|-?0\.[0-9]*[1-9])$"}


# The decision's `trace`, as `engine.pipeline` writes it for a published decision
# (explained): its keys and their types, for its JSON Schema (closed objects, so that
# a key the engine adds without declaring it here fails tests/unit/test_schemas.py).
# The engine builds it as plain dicts; it is never validated against these types.
TraceDec = Annotated[Decimal, CanonicalDecimal()]
TraceTime = Annotated[str, WireTime()]
_CLOSED = ConfigDict(extra="forbid")


@with_config(_CLOSED)
class TraceInput(TypedDict):
    """Where the signal was read and what the portfolio's state had applied by then."""

    topic: str
    partition: int
    offset: int | None
    last_fill_offset: int | None
    instrument_offset: int | None
    last_control_offset: int | None
    controls_applied: list[tuple[int, int | None]]
    """Each command applied since the last decision: (its offset, the last fill's before it)."""


@with_config(_CLOSED)
class TraceSignal(TypedDict):
    symbol: str
    side: Side
    score: TraceDec | None
    price: TraceDec
    ts: TraceTime


@with_config(_CLOSED)
class TraceState(TypedDict):
    """The state the decision read (USD; times as RFC 3339 UTC)."""

    latest_ts: TraceTime | None
    clock: TraceTime | None
    positions: TraceDec
    reserved: TraceDec
    exposure: TraceDec
    lapsed_reservations: int
    consecutive_wins: int
    consecutive_losses: int
    drawdown: bool
    phase: int
    equity: TraceDec
    closed_trades: int
    halt: RejectionReason | None
    max_drawdown: str | None
    peak_equity: NotRequired[TraceDec]
    drawdown_pct: NotRequired[TraceDec | None]


@with_config(_CLOSED)
class TraceLapsed(TypedDict):
    order_id: str
    symbol: str
    notional: TraceDec
    made_ts: TraceTime


@with_config(_CLOSED)
class TraceLossGuard(TypedDict):
    losses_in_window: int
    loss_guard_count: int
    paused_until: TraceTime | None


@with_config(_CLOSED)
class TraceCooldown(TypedDict):
    symbol: str
    until: TraceTime | None


@with_config(_CLOSED)
class TraceOrderRate(TypedDict):
    opens_in_window: int
    max_orders_per_window: int


@with_config(_CLOSED)
class TraceProtections(TypedDict, total=False):
    loss_guard: TraceLossGuard
    cooldown: TraceCooldown
    order_rate: TraceOrderRate


@with_config(_CLOSED)
class TraceReduce(TypedDict):
    held_qty: TraceDec
    position_side: Side | None
    reduce_fraction: TraceDec
    qty: NotRequired[TraceDec]
    legs_held: NotRequired[dict[str, TraceDec]]  # a pair's legs, venue symbol -> base units held


@with_config(_CLOSED)
class TraceCaps(TypedDict, total=False):
    """The caps in the order they apply (pair, group, portfolio), each with its
    exposure and remainder; those after a refusing cap are absent."""

    mode: Required[Literal["shrink", "skip"]]
    pair_cap: TraceDec
    pair_exposure: TraceDec
    pair_remaining: TraceDec
    group: str
    group_cap: TraceDec
    group_exposure: TraceDec
    group_remaining: TraceDec
    portfolio_cap: TraceDec
    remaining: TraceDec
    capped_budget: TraceDec
    bound_by: RejectionReason


@with_config(_CLOSED)
class TraceClamp(TypedDict):
    leg: str
    rule: Literal["max_qty", "max_notional"]
    limit: TraceDec


@with_config(_CLOSED)
class TraceExchange(TypedDict, total=False):
    step: Required[TraceDec]
    qty: Required[TraceDec]
    unclamped_qty: TraceDec
    clamped_by: TraceClamp
    leg_qty: dict[str, TraceDec]
    hedge_residual: dict[str, TraceDec]
    reason: RejectionReason
    detail: str


@with_config(_CLOSED)
class TraceFixedBase(TypedDict):
    mode: Literal["fixed"]
    base: TraceDec


@with_config(_CLOSED)
class TraceGraduatedBase(TypedDict):
    mode: Literal["graduated"]
    phase: int
    equity_pct: TraceDec
    base: TraceDec


@with_config(_CLOSED)
class TraceUnscored(TypedDict):
    mode: Literal["unscored"]
    unscored_signals: Literal["static", "reject"]
    multiplier: NotRequired[TraceDec]


@with_config(_CLOSED)
class TraceLinear(TypedDict):
    mode: Literal["linear"]
    fraction: TraceDec


@with_config(_CLOSED)
class TraceTiers(TypedDict):
    mode: Literal["tiers"]
    tier: int | None
    multiplier: NotRequired[TraceDec]


@with_config(_CLOSED)
class Trace(TypedDict, total=False):
    """A published decision's trace: the input position, the signal, the state read,
    then what each pipeline step computed, as far as the decision went."""

    input: Required[TraceInput]
    signal: Required[TraceSignal]
    state: Required[TraceState]
    lapsed: list[TraceLapsed]
    protections: TraceProtections
    reduce: TraceReduce
    static: Literal[True]
    conviction: Annotated[Union[TraceUnscored, TraceLinear, TraceTiers], Field(discriminator="mode")]
    base: Annotated[Union[TraceFixedBase, TraceGraduatedBase], Field(discriminator="mode")]
    drawdown_multiplier: TraceDec
    budget: TraceDec
    caps: TraceCaps
    exchange: TraceExchange
    detail: str
    """A rejection's `key=value` detail."""


class TraceSchema:
    """`Decision.trace`'s JSON Schema: `Trace`'s (the field itself stays a plain dict)."""

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        return handler(TypeAdapter(Trace).core_schema)


class Decision(BaseModel):
    """One per signal. `trace` holds every intermediate value of the pipeline, the
    state it read and the input position (`Trace`); rejected decisions carry no order."""

    model_config = ConfigDict(frozen=True)

    signal_id: str
    portfolio_id: str
    outcome: Outcome
    reason: RejectionReason | None
    order_id: str | None
    qty: Dec | None
    notional: Dec | None
    trace: Annotated[dict[str, Any], TraceSchema()]
    config_hash: str


B = TypeVar("B", bound=BaseModel)


_set = object.__setattr__
_FIELDS_SET: dict[type, set[str]] = {}


def build(model: type[B], **values: Any) -> B:
    """Construct an output message from values the engine has already checked.

    The engine's hot path makes one decision (and maybe one order) per signal; this
    skips validation like `model_construct`, without its per-field bookkeeping.
    Every field must be given. The models are frozen, so instances can share one
    fields-set per model: nothing ever adds to it."""
    message = model.__new__(model)
    _set(message, "__dict__", values)
    fields_set = _FIELDS_SET.get(model)
    if fields_set is None:
        fields_set = _FIELDS_SET[model] = set(model.model_fields)
    _set_fields_set(message, fields_set)
    _set_extra(message, None)
    _set_private(message, None)
    return message


class Fields:
    """A message's fields as plain attributes, sharing its `__dict__` (`fields_of`);
    read-only, as the message is."""

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError(f"{name}: a message's fields are read-only")

    def __delattr__(self, name: str) -> None:
        raise TypeError(f"{name}: a message's fields are read-only")


def fields_of(message: BaseModel) -> Any:
    """A read-only view of `message`'s fields as plain attributes, sharing its
    `__dict__` (nothing copied). A pydantic model's attribute read passes through
    BaseModel's `__getattr__` hook and is never specialized by the interpreter; the
    engine reads a signal's fields a few dozen times per decision."""
    view = _new(Fields)
    _set_dict(view, message.__dict__)
    return view


_new = object.__new__
_set_dict = vars(Fields)["__dict__"].__set__


# BaseModel's slots, set through their descriptors (what object.__setattr__ looks up each time)
_set_fields_set = vars(BaseModel)["__pydantic_fields_set__"].__set__
_set_extra = vars(BaseModel)["__pydantic_extra__"].__set__
_set_private = vars(BaseModel)["__pydantic_private__"].__set__


def to_json(message: BaseModel) -> str:
    """The wire form of a message: compact JSON, field order as declared, Decimals canonical."""
    kind = type(message)
    fields = _AS_STORED.get(kind)
    if fields is not None:
        stored = message.__dict__
        return decimals.dumps({name: stored[name] for name in fields})
    if kind is Order:
        return decimals.dumps(_order_wire(message.__dict__))
    return decimals.dumps(message.model_dump())


# Models whose every field is written as `decimals.dumps` writes its value (a Decimal
# as `canonical`, like `Dec`'s serializer; the rest as is, the trace's nested data
# included): their wire form needs no pass of pydantic's serializer first, one per
# signal for decisions. Not Order: its `ts` is written as RFC 3339 and its legs are models
# (`_order_wire`).
_AS_STORED: dict[type, tuple[str, ...]] = {Decision: tuple(Decision.model_fields)}


def _order_wire(stored: dict[str, Any]) -> dict[str, Any]:
    # Order.model_dump() as `decimals.dumps` then writes it (its Decimals as `canonical`):
    # the legs as plain objects, `ts` as RFC 3339 UTC, without pydantic's serializer
    return {
        "order_id": stored["order_id"], "signal_id": stored["signal_id"], "portfolio_id": stored["portfolio_id"],
        "symbol": stored["symbol"], "side": stored["side"], "qty": stored["qty"], "price": stored["price"],
        "notional": stored["notional"],
        "legs": [{"venue_symbol": leg.venue_symbol, "side": leg.side, "qty": leg.qty, "kind": leg.kind,
                  "contract_size": leg.contract_size} for leg in stored["legs"]],
        "ts": format_event_time(stored["ts"]), "config_hash": stored["config_hash"],
        "base_qty": stored["base_qty"],
    }


M = TypeVar("M")

# by id, with the model itself held (so the id stays its own): hashing an Annotated
# union such as `Fill` walks its arguments in Python, once per message
_ADAPTERS: dict[int, tuple[Any, TypeAdapter[Any]]] = {}


def _adapter(model: Any) -> TypeAdapter[Any]:
    known = _ADAPTERS.get(id(model))
    if known is None or known[0] is not model:
        known = _ADAPTERS[id(model)] = (model, TypeAdapter(model))
    return known[1]


def describe(error: ValidationError) -> tuple[str, str]:
    """A (code, detail) pair for a validation error: the first failing field and its rule."""
    field, message, kind = field_errors(error, "message")[0]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        field = "type"
    code = "MISSING_FIELD" if kind == "missing" else "INVALID_FIELD"
    return code, f"{field}: {message}"


def validate(model: Any, data: Any) -> Any:
    """Validate already-parsed JSON data as `model`; raises InvalidMessage naming the field and rule."""
    if not isinstance(data, dict):
        raise InvalidMessage("NOT_AN_OBJECT", f"expected a JSON object, got {type(data).__name__}")
    try:
        return _adapter(model).validate_python(data)
    except ValidationError as exc:
        raise InvalidMessage(*describe(exc)) from exc


def decode(model: Any, raw: bytes | str) -> Any:
    """Decode one wire message: UTF-8 JSON, numbers as Decimal, validated as `model`."""
    try:
        data = decimals.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidMessage("INVALID_JSON", f"not valid JSON: {exc}") from exc
    return validate(model, data)
