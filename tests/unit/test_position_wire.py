"""A position survives its changelog round trip in every form it is written in,
and the value read back is written again as it was (the worker writes what it
read when the portfolio changes again)."""

from decimal import Decimal

import pytest

from streams.engine.state import Position, _position_from_wire, _position_to_wire
from streams.wire import decimals

D = Decimal


@pytest.mark.parametrize("position", [
    Position(D("2"), D("100")),  # no side or group known: a fill of no known order
    Position(D("2"), D("100"), "buy", None),
    Position(D("2"), D("100"), "sell", "BTC"),
    Position(D("2"), D("100"), "buy", "BTC", {"BTCUSDT-PERP": D("1.5")}),
])
def test_a_position_read_back_from_its_changelog_value_is_the_same_and_encodes_again(position):
    wire = decimals.loads(decimals.dumps(_position_to_wire(position)))
    read = _position_from_wire(wire)
    assert read == position
    assert read.side == position.side and dict(read.legs) == dict(position.legs)
    assert decimals.loads(decimals.dumps(_position_to_wire(read))) == wire
