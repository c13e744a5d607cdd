"""The bench's exactly-once limit, contender (0) exactly-once (`streams.bench.bare_loop`),
is what it claims on the real broker, in both its forms (one transaction per input
partition, one per batch): every signal copied once under read_committed, byte for
byte, and its offsets committed with the copies, also when it is killed with
transactions open and started again."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from streams.bench.generate import spread_signals
from tests.integration.harness import ROOT, eventually

PAUSE_S = 2.0  # the killed loop waits this long in every transaction before committing it


def start_loop(deployment, log, **env):
    return subprocess.Popen([sys.executable, "-m", "streams.bench.bare_loop"], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT,
                            env=deployment.env(SIZER_PROCESSING_GUARANTEE="exactly_once", **env))


@pytest.mark.parametrize("form", ["per_partition", "per_batch"])
def test_the_exactly_once_bare_loop_copies_every_signal_once_across_a_kill_mid_transaction(deployment, tmp_path,
                                                                                          form):
    entries = [(role, value) for role, value in spread_signals(600, portfolios=50, seed=5) if role == "signals"]
    first, second = entries[:300], entries[300:]
    deployment.publish(first)
    log_path = tmp_path / "loop.log"
    with open(log_path, "wb") as log:
        loop = start_loop(deployment, log, BENCH_TRANSACTIONS=form, BENCH_PAUSE_IN_TRANSACTION_S=str(PAUSE_S))
        try:
            eventually(lambda: len(deployment.read("decisions")) == len(first), what="the first half copied")
            deployment.publish(second)
            time.sleep(PAUSE_S / 2)  # the second half fetched and copied, its transactions not committed
            loop.kill()
            loop.wait()
            aborted = len(deployment.read("decisions", isolation_level="read_uncommitted")) - len(first)
            assert aborted > 0, "the kill found no transaction open: nothing was left to abort"
            # fences the killed loop's producers, ending their transactions
            loop = start_loop(deployment, log, BENCH_TRANSACTIONS=form)
            deployment.wait_for("decisions", len(entries))
            deployment.wait_consumed("signals")
            loop.send_signal(signal.SIGTERM)
            assert loop.wait(timeout=60) == 0, log_path.read_text()
        finally:
            if loop.poll() is None:
                loop.kill()
    copies = deployment.read("decisions")  # after the loop has stopped: no copy can come later
    signals = deployment.read("signals")
    assert len(signals) == len(entries)
    assert Counter((r.partition, r.key, r.value) for r in copies) == \
        Counter((r.partition, r.key, r.value) for r in signals)
