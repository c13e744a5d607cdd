"""The protections and per-portfolio settings against inputs their first tests did not
try: portfolio tables that only together make an invalid configuration, an instrument
that changes its group, the whole exit of a pair with an inverse leg, losing closes
that arrive out of event-time order. Each through the real `sizer` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streams.engine import order_id_for
from tests.builders import T0, closed, filled, instrument, leg, reduce, signal

SIZER = str(Path(sys.executable).with_name("sizer"))
SECOND = 1000


def said(decisions):
    return [(d["signal_id"], d["reason"] or d["notional"]) for d in decisions]


# Group caps

def test_a_position_counts_in_the_group_its_instrument_was_last_sized_in(replay):
    """X is republished from group G into H; an H order on X fills, and the whole X
    position is H's: a Y signal in H finds the cap full, not empty."""
    entries = [instrument("X", leg("XUSDT", qty_step="0.01"), group="G"),
               instrument("Y", leg("YUSDT", qty_step="0.01"), group="H"),
               signal("p1", "X", "0", "100", signal_id="a"),  # 300, in G
               filled("p1", order_id_for("p1", "a"), "X", "3", "100", ts=T0 + 1),
               instrument("X", leg("XUSDT", qty_step="0.01"), group="H"),
               signal("p1", "X", "1", "100", ts=T0 + 2, signal_id="b"),  # 700 under the pair cap, in H
               filled("p1", order_id_for("p1", "b"), "X", "7", "100", ts=T0 + 3),
               signal("p1", "Y", "1", "100", ts=T0 + 4, signal_id="c")]
    decisions = replay(entries, env={"SIZING_GROUP_CAPS": '{"H": "1300"}', "SIZING_PORTFOLIO_CAP": "10000"})
    assert said(decisions) == [("a", "300"), ("b", "700"), ("c", "300")]
    assert decisions[2]["trace"]["caps"]["group_exposure"] == "1000"
