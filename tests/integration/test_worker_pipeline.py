"""A worker on the real broker: signals in, orders and decisions out, exactly as
the engine derives them offline from the interleaving the worker recorded."""

from __future__ import annotations


import pytest

from streams import demo_session
from streams.config import load_config
from tests.integration.harness import decisions_by_signal


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_decisions_and_orders_match_the_engine_on_the_recorded_interleaving(deployment, workers, guarantee):
    session = list(demo_session.session())
    signals = sum(1 for role, _ in session if role == "signals")
    workers("--preset", "graduated", "--processing-guarantee", guarantee)

    deployment.publish(session)
    decisions = deployment.wait_for("decisions", signals)
    orders = deployment.read("orders")

    # One decision per signal; one order per accepted decision, with the same id.
    assert len(decisions) == signals
    accepted = [r.json() for r in decisions if r.json()["outcome"] == "accepted"]
    assert sorted(o.json()["order_id"] for o in orders) == sorted(d["order_id"] for d in accepted)
    # Every output went to the partition of the signal that made it.
    for record in decisions:
        assert record.json()["trace"]["input"]["partition"] == record.partition

    # The audit re-derives every decision and order from topic history, bit for bit.
    code, report, _ = deployment.audit()
    assert (code, report["ok"], report["verified"]) == (0, True, signals), report
    config = load_config("graduated")
    assert all(d["config_hash"] == config.config_hash for d in decisions_by_signal(decisions)["a-1"])


@pytest.mark.parametrize("transactions", ["per_partition", "per_worker"])
def test_exactly_once_writes_orders_and_decisions_inside_transactions(deployment, workers, transactions):
    """A transaction's commit marker takes an offset after its records, so every
    partition written transactionally ends past its last record. faust-streaming's
    own routing sends these topics outside any transaction (end offset = last
    record + 1); the product's event-scoped transactions put them inside, with one
    producer per input partition or one per worker (`SIZER_TRANSACTIONS`)."""
    workers("--preset", "graduated", SIZER_TRANSACTIONS=transactions)
    deployment.run_demo_session()

    for role in ("orders", "decisions"):
        records = deployment.read(role)
        assert records and len(deployment.read(role, isolation_level="read_uncommitted")) == len(records)
        ends = deployment.end_offsets(role)
        last: dict[int, int] = {}
        for record in records:
            last[record.partition] = max(last.get(record.partition, -1), record.offset)
        for partition, offset in last.items():
            assert ends[partition] > offset + 1, f"{role}[{partition}] ends right after its last record: not transactional"
