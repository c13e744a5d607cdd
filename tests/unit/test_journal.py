"""The journal reader parses each line as `decimals.loads` does, whichever parser reads it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.wire import journal
from streams.wire import decimals


def parse(parser: Any, raw: bytes | str) -> tuple[str, Any]:
    try:
        return "value", parser(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return "error", (type(exc), str(exc))


def same_as_loads(raw: bytes | str) -> None:
    fast, reference = parse(journal._parsed, raw), parse(decimals.loads, raw)
    assert fast == reference
    if fast[0] == "value":  # equal is not enough: 1 == 1.0 == Decimal(1)
        assert repr(fast[1]) == repr(reference[1])


@pytest.mark.parametrize("raw", [
    b'{"topic":"signals","value":{"price":"10.5","ts":1767225600000,"score":"0.5"}}',
    b'{"value":{"price":10.5}}', b'{"a":1e5}', b'{"a":[1,{"b":-0.0}]}', b'{"a":-0}',
    b'{"a":123456789012345678901234567890}', b'{"a":-9223372036854775809}', b'{"a":18446744073709551616}',
    b'{"a":1,"b":2,"a":3}', b'{"\\u0061":1,"a":2}', b'\xef\xbb\xbf{"a":1}', '\ufeff{"a":1}',
    b'{"a":"\\ud800"}', '{"a":"\udc80"}', b'{"a":NaN}', b'{"a":-Infinity}', b'[' * 2000 + b']' * 2000,
    b'{"a":"x\x01"}', b"\xff", b'{"a":"\xc3\xa9"}', b'{"a":1}x', b"", b" {\"a\":true,\"b\":null} \n", b'"text"',
    b'{"a":1e1000000000000000000}', b'\xff\xfe{\x00}\x00',
])
def test_a_line_parses_to_what_decimals_loads_gives(raw):
    same_as_loads(raw)


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(st.characters(blacklist_categories=())),
                    st.floats(allow_nan=False, allow_infinity=False))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=12)


@given(value=values)
def test_any_json_parses_to_what_decimals_loads_gives(value):
    text = json.dumps(value, ensure_ascii=False)
    same_as_loads(text)
    same_as_loads(text.encode("utf-8", "surrogatepass"))
