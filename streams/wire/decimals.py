"""Decimal helpers shared by the wire format and the engine.

Money, prices, quantities and scores are `Decimal` from the wire to the wire: JSON
numbers are parsed straight into `Decimal` (never through float) and written back
as canonical strings.
"""

from __future__ import annotations

import json
import re
from decimal import (
    ROUND_HALF_EVEN, Context, Decimal, DivisionByZero, InvalidOperation, Overflow, getcontext, setcontext,
)
from typing import Any

import msgspec
import orjson

ZERO = Decimal(0)
ONE = Decimal(1)


# A decimal string on the wire is a JSON number (RFC 8259, section 6): ASCII digits,
# no sign but '-', no leading zeros, no '_', no spaces. Python's Decimal() alone
# would also take "1_00", " 1", "+1", "Infinity" and non-ASCII digits.
JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_SHOWN = 40  # characters of a rejected value quoted back in an error
_json_number = JSON_NUMBER.fullmatch


def to_decimal(value: Any) -> Decimal:
    """Convert a wire value (a JSON-number string, int or Decimal) to a finite Decimal.

    Floats are refused: a float has already lost the decimal the sender meant.
    Strings must follow the JSON number grammar (`JSON_NUMBER`).
    Raises ValueError with the rule that failed.
    """
    if isinstance(value, str):  # the usual wire shape first (a str is never a bool or a float)
        if _json_number(value) is None:
            shown = value if len(value) <= _SHOWN else value[:_SHOWN] + "..."
            raise ValueError(f"is not a decimal number in JSON number form: {shown!r}")
        try:
            result = Decimal(value)
        except ArithmeticError:  # an exponent past what Decimal can hold: "1e1000000000000000000"
            raise ValueError("is out of range") from None
    elif isinstance(value, bool) or isinstance(value, float):
        raise ValueError("must be a decimal string or an integer, not a float")
    elif isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    else:
        raise ValueError(f"must be a decimal string or number, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError("must be a finite number")
    return result


# The engine's arithmetic context. Inputs are bounded to below 1e16 with at most
# 18 places (`bounded`), so a product of two has at most 68 digits and no sum of
# them comes near 100: every sizing operation is exact, nothing rounds.
ENGINE_CONTEXT = Context(prec=100, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow])



def engine_context_active() -> bool:
    """Whether this thread already computes in the engine's context (the applications
    install it at start-up with `use_engine_context`)."""
    context = getcontext()
    return context.prec >= ENGINE_CONTEXT.prec and context.rounding == ROUND_HALF_EVEN


def use_engine_context() -> None:
    """Make the engine's exact context this thread's context (application start-up)."""
    setcontext(ENGINE_CONTEXT.copy())


MAX_ADJUSTED_EXPONENT = 15  # below 1e16 in magnitude
MAX_PLACES = 18


def bounded(value: Decimal) -> Decimal:
    """A wire decimal within what any price, quantity or amount can be: below 1e16
    in magnitude, at most 18 decimal places (trailing zeros aside). Beyond that an
    input is an error, not something to size: it could only overflow or lose digits
    downstream. Checked on the digits and exponent alone: arithmetic on such a
    value could itself overflow."""
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        raise ValueError("must be a finite number")
    if exponent >= -MAX_PLACES and value.adjusted() <= MAX_ADJUSTED_EXPONENT:
        # within both bounds as written: stripping trailing zeros cannot change that
        return value
    significant = len(digits)
    while significant > 1 and digits[significant - 1] == 0 and exponent < 0:
        significant -= 1
        exponent += 1
    if any(digits) and significant + exponent - 1 > MAX_ADJUSTED_EXPONENT:
        raise ValueError("must be below 1e16 in magnitude")
    if exponent < -MAX_PLACES and any(digits):
        raise ValueError(f"must have at most {MAX_PLACES} decimal places")
    return value


# A decimal string's exponent, when it has one, is that of scientific notation: one
# digit before the point (not 0, unless the value is 0), as Python's `str(Decimal)`
# and Java's `BigDecimal.toString` write it ("1E-8", "1.50E+3"), and between these.
# Together with the bounds above this is a rule on the text alone, which a regular
# expression states exactly (`decimal_pattern`): the JSON Schemas carry it as is.
MIN_EXPONENT = -MAX_PLACES
MAX_EXPONENT = MAX_ADJUSTED_EXPONENT


def _up_to(n: int) -> str:
    """A regular expression for the numbers 0..n (n < 100), without leading zeros."""
    assert 0 <= n < 100
    if n < 10:
        return f"[0-{n}]"
    tens, units = divmod(n, 10)
    spans = ["[0-9]"] + ([f"[1-{tens - 1}][0-9]" if tens > 2 else "1[0-9]"] if tens > 1 else [])
    return "(?:" + "|".join(spans + [f"{tens}[0-{units}]"]) + ")"


def _exponent(x: int | None = None) -> str:
    """The exponent part spelling `x` (leading zeros allowed, as JSON allows them), or
    any exponent from MIN_EXPONENT to MAX_EXPONENT (None)."""
    if x is None:
        return rf"[eE](?:\+?0*{_up_to(MAX_EXPONENT)}|-0*{_up_to(-MIN_EXPONENT)})"
    if x == 0:
        return "[eE][+-]?0+"
    return rf"[eE]\+?0*{x}" if x > 0 else rf"[eE]-0*{-x}"


def _fraction(places: int) -> str:
    """Digits after a point whose last non-zero digit is within `places` of it."""
    return f"[0-9]{{1,{places}}}0*" if places > 0 else "0+"


def decimal_pattern(minimum: str | None = None, at_most_one: bool = False) -> str:
    """The regular expression (anchored, ECMA 262 and Python alike) of the decimal
    strings `wire_decimal` accepts whose value is also above the bound `minimum`
    (None: none; ">0"; ">=0") and, with `at_most_one`, at most 1. A string matches
    it exactly when the worker accepts it for such a field: the JSON Schemas and
    tests/unit/test_schema_contract.py hold to that."""
    zero = "0(?:\\.0+)?(?:" + _exponent() + ")?"
    plain = f"0\\.[0-9]{{0,{MAX_PLACES - 1}}}[1-9]0*"  # in (0, 1)
    scientific = [f"[1-9](?:\\.{_fraction(MAX_PLACES + x)})?{_exponent(x)}" for x in range(MIN_EXPONENT, 0)]
    if at_most_one:
        nonzero = [plain, "1(?:\\.0+)?(?:" + _exponent(0) + ")?"] + scientific
    else:
        nonzero = [plain, f"[1-9][0-9]{{0,{MAX_ADJUSTED_EXPONENT}}}(?:\\.{_fraction(MAX_PLACES)})?"] + scientific + [
            f"[1-9](?:\\.{_fraction(MAX_PLACES + x)})?{_exponent(x)}" for x in range(0, MAX_EXPONENT + 1)]
    positive = "|".join(nonzero)
    if minimum == ">0":
        body = positive
    elif minimum == ">=0":
        body = f"-?{zero}|{positive}"
    elif minimum is None and not at_most_one:
        body = f"-?(?:{zero}|{positive})"
    else:
        raise ValueError(f"no pattern for minimum={minimum!r}, at_most_one={at_most_one}")
    return f"^(?:{body})$"


_SCIENTIFIC = re.compile(decimal_pattern()).fullmatch
ONE_PATTERN = "^1(?:\\.0+)?(?:" + _exponent(0) + ")?$"  # the decimal strings `wire_decimal` reads as 1


def wire_decimal(value: Any) -> Decimal:
    """`bounded(to_decimal(value))`: a wire value as a finite Decimal within the
    bounds, or ValueError with the rule that failed (the same error, the same words);
    a string written with an exponent must also be in scientific notation with an
    exponent from MIN_EXPONENT to MAX_EXPONENT (so that `decimal_pattern` is exactly
    the strings accepted).

    The usual input, a JSON-number string in plain notation, is checked on its text:
    written without an exponent, its decimal places are the digits after the point."""
    if type(value) is str and value.isascii():
        whole, point, fraction = (value[1:] if value[:1] == "-" else value).partition(".")
        # JSON_NUMBER without an exponent: -?(0|[1-9][0-9]*)(\.[0-9]+)? (an ASCII
        # isdigit() is [0-9]; the one leading zero is a lone "0")
        if (whole.isdigit() and (whole[0] != "0" or len(whole) == 1) and (not point or fraction.isdigit())
                and len(fraction) <= MAX_PLACES):
            result = Decimal(value)
            if result.adjusted() <= MAX_ADJUSTED_EXPONENT:
                return result
    result = bounded(to_decimal(value))
    if type(value) is str and ("e" in value or "E" in value) and _SCIENTIFIC(value) is None:
        raise ValueError(f"with an exponent must be in scientific notation (one digit before the point, as in "
                         f"1.5E-8) with an exponent from {MIN_EXPONENT} to {MAX_EXPONENT}")
    return result


def canonical(value: Decimal) -> str:
    """The one string form of a Decimal on the wire: plain notation, no exponent,
    no trailing zeros (`Decimal("930.00")` -> `"930"`, `Decimal("1E+3")` -> `"1000"`)."""
    if not value:
        return "0"
    text = str(value)
    # Plain notation as written, of at most 28 digits (so normalizing could not round
    # them in any context of at least the default precision): the normalized value's
    # digits are these, less the trailing zeros of the fraction.
    if len(text) <= 28 and "E" not in text and "e" not in text:
        return text.rstrip("0").rstrip(".") if "." in text else text
    normal = value.normalize()
    # str() is plain notation unless the exponent is positive or the value is below 1e-6;
    # format(.., "f") always is, at five times the cost
    text = str(normal)
    if "E" in text or "e" in text:
        return format(normal, "f")
    return text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


# The fast decoder: msgspec hands a float's own text to Decimal, like json's parse_float.
_FAST = msgspec.json.Decoder(float_hook=Decimal)
# Inputs up to this length (characters or bytes) go to it first: short enough that no
# number in them reaches Python's 4,300-digit int limit and no nesting reaches the
# recursion limit, the two places where the two parsers could part.
FAST_DECODE_LIMIT = 1024


def loads(raw: bytes | str) -> Any:
    """Parse JSON with every number as Decimal (ints stay int) and NaN/Infinity refused.
    Raises ValueError (or UnicodeDecodeError) for anything that is not such JSON,
    nesting too deep for the parser included.

    msgspec decodes what it accepts, to the same value; whatever it refuses goes to
    the reference parser (`json`), which decides and words the error, so a rejection
    reads the same whichever parser saw the input first (tests/unit/test_codec.py)."""
    if len(raw) <= FAST_DECODE_LIMIT:
        try:
            return _FAST.decode(raw)
        except Exception:  # noqa: BLE001 - the reference parser gives the verdict and its words
            pass
    return reference_loads(raw)


def reference_loads(raw: bytes | str) -> Any:
    """`loads` by the standard library's parser alone: the definition `loads` keeps to.
    Bytes are UTF-8 (RFC 8259, 8.1; a byte order mark tolerated): the standard parser
    would also take UTF-16 and UTF-32, whose JSON may start with a zero byte, the
    Confluent wire format's magic byte, and so be read apart by the readers of topic
    history (`wire.framing.payload`)."""
    if isinstance(raw, (bytes, bytearray)) and json.detect_encoding(raw) not in ("utf-8", "utf-8-sig"):
        raise ValueError(f"not UTF-8 (JSON exchanged between systems is UTF-8), {json.detect_encoding(raw)} "
                         f"by its first bytes")
    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ArithmeticError:  # a number whose exponent Decimal cannot hold: 1e1000000000000000000
        raise ValueError("a number is out of range") from None


def loads_output(raw: bytes | str) -> Any:
    """Parse JSON that this product wrote (decisions, orders, configuration): every
    decimal in it is a string, so the fast parser reads it exactly. Inputs from
    outside go through `loads`, which never lets a number become a float."""
    return orjson.loads(raw)


def _default(value: Any) -> Any:
    # orjson calls this once per Decimal of a message (about 19 in a decision):
    # `canonical`'s common case is repeated here, saving a call per number
    if type(value) is Decimal:
        if not value:
            return "0"
        text = str(value)
        if len(text) <= 28 and "E" not in text and "e" not in text:
            return text.rstrip("0").rstrip(".") if "." in text else text
        return canonical(value)
    if isinstance(value, Decimal):
        return canonical(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(value: Any) -> str:
    """Encode JSON compactly (UTF-8, no spaces), Decimals as canonical strings, keys in the order given."""
    return orjson.dumps(value, default=_default).decode()


def encoded(raw: bytes) -> Any:
    """JSON already encoded by `dumps` (as UTF-8), to be written as is where it stands in
    a value `dumps` encodes: the same bytes as the value it was encoded from."""
    return orjson.Fragment(raw)
