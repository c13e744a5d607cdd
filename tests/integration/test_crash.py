"""SIGKILL at random points while 20,000 signals and fills stream through, five
times, under exactly-once; then every invariant of `invariants` holds."""

from __future__ import annotations

import os
import random
import time

from streams.bench.generate import session
from tests.integration.invariants import assert_exactly_once

SIGNALS = int(os.environ.get("TEST_CRASH_SIGNALS", "13400"))  # with fills: over 20,000 inputs
KILLS = int(os.environ.get("TEST_CRASH_KILLS", "5"))


def test_five_sigkills_lose_nothing_and_double_nothing(deployment, workers):
    rng = random.Random(5)
    inputs = list(session(SIGNALS, portfolios=20, seed=5))
    assert len(inputs) >= 1.45 * SIGNALS

    worker = workers("--preset", "conviction")
    # the inputs keep coming while the worker is killed and restarted
    publisher = deployment.publish_over(inputs, seconds=25 * KILLS, chunks=10 * KILLS)
    while_streaming = 0
    for kill in range(KILLS):
        time.sleep(rng.uniform(1.0, 4.0))
        assert worker.alive()
        while_streaming += publisher.is_alive()
        worker.kill()  # SIGKILL: no flush, no commit, no goodbye
        worker = workers("--preset", "conviction")
    publisher.join()
    assert while_streaming >= min(KILLS, 3), f"only {while_streaming} kills fell while inputs were arriving"

    assert_exactly_once(deployment, inputs)
    assert worker.alive()
