"""Duplicated delivery and adversarial input through a real worker."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from streams.wire.admission import admit_record
from streams.errors import InvalidMessage
from streams.wire.models import Fill, Signal
from tests.builders import T0
from tests.integration.harness import Deployment, decisions_by_signal

ETH = {"symbol": "ETH-USD", "legs": [{"venue_symbol": "ETHUSDT", "side": "buy", "qty_step": "0.001",
                                       "min_qty": "0.001", "max_qty": None, "min_notional": "5"}]}


def test_a_signal_or_fill_delivered_twice_makes_one_order_and_one_state_change(deployment, workers):
    workers("--preset", "graduated")
    signal = {"signal_id": "s1", "portfolio_id": "p1", "symbol": "ETH-USD", "side": "buy", "score": "0.9",
              "price": "2500", "ts": T0}
    close = {"event_id": "c1", "portfolio_id": "p1", "ts": T0 + 1, "type": "position_closed", "symbol": "ETH-USD",
             "qty": "0.01", "price": "2500", "realized_pnl": "-7"}
    # an at-least-once producer retried both: the same bytes, twice each
    deployment.publish([("instruments", ETH), ("signals", signal), ("signals", signal)])
    deployment.wait_for("decisions", 2)
    deployment.publish([("fills", close), ("fills", close)])
    deployment.wait_consumed("fills")
    deployment.publish([("signals", {**signal, "signal_id": "probe", "ts": T0 + 2})])

    decisions = decisions_by_signal(deployment.wait_for("decisions", 3))
    orders = deployment.read("orders")
    assert [d["outcome"] for d in decisions["s1"]] == ["accepted", "rejected"]
    assert decisions["s1"][1]["reason"] == "DUPLICATE_SIGNAL"
    assert [o.json()["signal_id"] for o in orders] == ["s1", "probe"]
    state = decisions["probe"][0]["trace"]["state"]
    # one reservation (100) and one loss (-7), not two of each
    assert (state["reserved"], state["equity"], state["closed_trades"], state["consecutive_losses"]) == \
        ("100", "99993", 1, 1)
    code, report, _ = deployment.audit()
    assert code == 0 and report["verified"] == 3


# --- fuzz: malformed and adversarial payloads -------------------------------------------------

numbers = st.one_of(
    st.integers(-10**30, 10**30), st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["NaN", "Infinity", "-0", "1e400", "1E+1000000", "1E-1000000", "0.0000000000000000000001",
                     "99999999999999999999999999999999999999", "1_000", " 5 ", "0x10", "", "-1", "0", "1.5"]),
    st.text(max_size=12),
)
values = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=30), st.lists(st.integers(), max_size=3),
                   st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
fields = {"signal_id": st.text(min_size=0, max_size=300), "portfolio_id": st.just("fz"),
          "symbol": st.sampled_from(["ETH-USD", "NOPE", ""]), "side": st.sampled_from(["buy", "sell", "hold", ""]),
          "score": numbers, "price": numbers,
          "ts": st.one_of(st.integers(-5, 2 * 10**13), st.sampled_from(["2026-01-01T00:00:00Z", "yesterday", ""]))}


@st.composite
def signal_payloads(draw) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return json.dumps(draw(values)).encode()
    body = {name: draw(strategy) for name, strategy in fields.items() if draw(st.integers(0, 9)) > 0}
    if kind == 2:  # one field of the wrong type
        body[draw(st.sampled_from(sorted(fields)))] = draw(values)
    if kind == 3:
        body["extra"] = draw(values)
    body["portfolio_id"] = "fz"
    text = json.dumps(body)
    if kind == 4 and len(text) > 2:  # truncated or spliced JSON
        cut = draw(st.integers(1, len(text) - 1))
        text = text[:cut] + draw(st.sampled_from(["", "}", ",", '"', "\\u0000"]))
    return text.encode()


@st.composite
def fill_payloads(draw) -> bytes:
    body = {"event_id": draw(st.text(max_size=20)), "portfolio_id": "fz", "ts": draw(fields["ts"]),
            "type": draw(st.sampled_from(["order_filled", "order_canceled", "position_closed", "refund", ""])),
            "order_id": draw(st.text(max_size=20)), "symbol": "ETH-USD", "qty": draw(numbers), "price": draw(numbers),
            "realized_pnl": draw(numbers), "final": draw(st.one_of(st.booleans(), values))}
    return json.dumps({k: v for k, v in body.items() if draw(st.integers(0, 7)) > 0}).encode()


def expected_valid(model, raw: bytes) -> bool:
    """Whether the worker admits the payload keyed b"fz" (`streams.wire.admission`), its
    record timestamp about now (the producer's clock; an event time within a few
    seconds of the 60 s skew limit is too unlikely in these ranges to matter)."""
    role = "signals" if model is Signal else "fills"
    try:
        admit_record(role, b"fz", raw, int(time.time() * 1000), 60_000)
    except InvalidMessage:
        return False
    return True


@pytest.fixture(scope="module")
def fuzz_target(bootstrap, tmp_path_factory):
    deployment = Deployment.create(bootstrap, tmp_path_factory.mktemp("fuzz"))
    worker = deployment.worker("--preset", "conviction").start()
    deployment.publish([("instruments", ETH)])
    yield deployment, worker
    worker.kill()


PAYLOADS = 10_000
BATCH = 1_000


def draw_payloads(count: int) -> list[tuple[str, bytes]]:
    """`count` payloads drawn one by one from the strategies above, the same ones on
    every run. (A strategy of whole batches made Hypothesis give up on most of them
    for their size: 50 batches of 200 ran as about 6.)"""
    drawn: list[tuple[str, bytes]] = []

    @settings(max_examples=count, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(signal_payloads().map(lambda p: ("signals", p)), fill_payloads().map(lambda p: ("fills", p))))
    def collect(payload):
        drawn.append(payload)

    collect()
    return drawn


def test_fuzzed_payloads_each_end_as_a_decision_or_a_dead_letter(fuzz_target):
    deployment, worker = fuzz_target
    payloads = draw_payloads(PAYLOADS)
    assert len(payloads) == PAYLOADS
    for first in range(0, PAYLOADS, BATCH):
        batch = payloads[first:first + BATCH]
        # what this batch adds, read from the end offsets before it
        before = {role: deployment.end_offsets(role) for role in ("decisions", "dlq")}
        deployment.publish(batch, keys={i: b"fz" for i in range(len(batch))})
        bad_signals = sum(1 for role, raw in batch if role == "signals" and not expected_valid(Signal, raw))
        good_signals = sum(1 for role, raw in batch if role == "signals") - bad_signals
        bad_fills = sum(1 for role, raw in batch if role == "fills" and not expected_valid(Fill, raw))

        deployment.wait_for("decisions", good_signals, since=before["decisions"])
        deployment.wait_for("dlq", bad_signals + bad_fills, since=before["dlq"])
        deployment.wait_consumed("signals")
        deployment.wait_consumed("fills")

        assert worker.alive(), worker.log()[-3000:]
        assert len(deployment.read("decisions", since=before["decisions"])) == good_signals, f"batch at {first}"
        assert len(deployment.read("dlq", since=before["dlq"])) == bad_signals + bad_fills, f"batch at {first}"
