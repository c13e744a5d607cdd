"""The table of topic roles against DESIGN.md's "Topics" table, written out here
by hand: every role's key, its cleanup, which the worker reads and writes."""

from __future__ import annotations

import pytest

from streams.wire import roles

# DESIGN.md, "Topics": topic -> its key field ("as received": none)
DESIGN_KEYS = {"signals": "portfolio_id", "fills": "portfolio_id", "instruments": "symbol",
               "orders": "portfolio_id", "decisions": "portfolio_id", "controls": "portfolio_id"}


def test_every_role_is_keyed_as_the_design_says():
    assert {role: roles.KEY_FIELD[role] for role in DESIGN_KEYS} == DESIGN_KEYS
    assert "dlq" not in roles.KEY_FIELD


def test_the_inputs_are_what_producers_write_and_the_outputs_what_the_worker_writes():
    assert list(roles.INPUTS) == ["instruments", "signals", "fills", "controls"]
    assert roles.OUTPUTS == ("decisions", "orders", "dlq")
    assert set(roles.POSITIONED) == set(roles.TIMED) == {"signals", "fills", "controls"}
    # DESIGN.md, "Production Kafka": registered portfolios on a compacted registry topic
    assert roles.COMPACTED == ("instruments", "config", "portfolios")
    assert roles.KEY_FIELD["portfolios"] == "portfolio_id" and "portfolios" not in roles.INPUTS
    assert set(roles.CO_PARTITIONED) == {"fills", "controls", "orders", "decisions"}


def test_fill_and_command_types_are_the_wire_types():
    assert roles.message_types("fills") == ("order_filled", "order_canceled", "position_closed")
    assert roles.message_types("controls") == ("halt", "resume", "release", "adjust_equity", "reset_clock")
    with pytest.raises(ValueError, match="not a union"):
        roles.message_types("signals")
