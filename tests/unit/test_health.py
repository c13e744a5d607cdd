"""The worker's readiness and liveness rules (streams.worker.health), on a moved clock."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from streams.worker.health import Health


def app_in(recovered: bool, rebalancing: bool) -> SimpleNamespace:
    completed = asyncio.Event()
    if recovered:
        completed.set()
    return SimpleNamespace(rebalancing=rebalancing, tables=SimpleNamespace(recovery=SimpleNamespace(
        completed=completed)), consumer=SimpleNamespace(assignment=lambda: {"signals-0", "fills-0"}))


def view(caught_up: bool) -> SimpleNamespace:
    event = asyncio.Event()
    if caught_up:
        event.set()
    return SimpleNamespace(caught_up=event)


def test_ready_needs_recovery_no_rebalance_and_instruments_caught_up():
    assert Health(app_in(True, False), view(True), 60).readiness()[0] is True
    assert Health(app_in(False, False), view(True), 60).readiness()[0] is False  # before the first recovery
    assert Health(app_in(True, True), view(True), 60).readiness()[0] is False  # during a rebalance
    assert Health(app_in(True, False), view(False), 60).readiness()[0] is False
    assert Health(app_in(True, False), view(True), 60).readiness()[1]["partitions"] == 2


def test_a_batch_running_past_the_timeout_is_not_live_and_an_idle_worker_is():
    now = [100.0]
    health = Health(app_in(True, False), view(True), 60, clock=lambda: now[0])
    assert health.liveness()[0] is True
    with health.processing():
        now[0] += 59
        assert health.liveness()[0] is True
        now[0] += 2
        live, body = health.liveness()
        assert live is False and body["processing_stuck"] is True and body["batch_running_s"] == 61
    assert health.liveness()[0] is True
    now[0] += 1000  # nothing to do for a long time is not stuck
    assert health.liveness() == (True, {"processing_stuck": False, "batch_running_s": 0.0, "stuck_after_s": 60,
                                        "batches": 1})
