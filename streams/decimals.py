"""Decimal helpers shared by the wire format and the engine.

Money, prices, quantities and scores are `Decimal` from the wire to the wire: JSON
numbers are parsed straight into `Decimal` (never through float) and written back
as canonical strings.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

ZERO = Decimal(0)
ONE = Decimal(1)


def to_decimal(value: Any) -> Decimal:
    """Convert a wire value (str, int or Decimal) to a finite Decimal.

    Floats are refused: a float has already lost the decimal the sender meant.
    Raises ValueError with the rule that failed.
    """
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError("must be a decimal string or an integer, not a float")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"is not a decimal number: {value!r}") from None
    else:
        raise ValueError(f"must be a decimal string or number, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError("must be a finite number")
    return result


def canonical(value: Decimal) -> str:
    """The one string form of a Decimal on the wire: plain notation, no exponent,
    no trailing zeros (`Decimal("930.00")` -> `"930"`, `Decimal("1E+3")` -> `"1000"`)."""
    if not value:
        return "0"
    text = format(value.normalize(), "f")
    return text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def loads(raw: bytes | str) -> Any:
    """Parse JSON with every number as Decimal (ints stay int) and NaN/Infinity refused."""
    return json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)


def loads_output(raw: bytes | str) -> Any:
    """Parse JSON that this product wrote (decisions, orders, configuration): every
    decimal in it is a string, so the fast parser reads it exactly. Inputs from
    outside go through `loads`, which never lets a number become a float."""
    return orjson.loads(raw)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return canonical(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(value: Any) -> str:
    """Encode JSON compactly (UTF-8, no spaces), Decimals as canonical strings, keys in the order given."""
    return orjson.dumps(value, default=_default).decode()
