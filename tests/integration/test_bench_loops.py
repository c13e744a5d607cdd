"""The bench's exactly-once limit, contender (0) exactly-once (`streams.bench.bare_loop`),
is what it claims on the real broker: every signal copied once under read_committed,
byte for byte, and its offsets committed with the copies, also when it is killed
and started again half way."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter

from streams.bench.generate import spread_signals
from tests.integration.harness import ROOT, eventually


def start_loop(deployment, log):
    return subprocess.Popen([sys.executable, "-m", "streams.bench.bare_loop"], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env=deployment.env(SIZER_PROCESSING_GUARANTEE="exactly_once"))


def test_the_exactly_once_bare_loop_copies_every_signal_once_across_a_kill(deployment, tmp_path):
    entries = [(role, value) for role, value in spread_signals(600, portfolios=50, seed=5) if role == "signals"]
    first, second = entries[:300], entries[300:]
    deployment.publish(first)
    with open(tmp_path / "loop.log", "wb") as log:
        loop = start_loop(deployment, log)
        try:
            eventually(lambda: len(deployment.read("decisions")) >= 100, what="copies before the kill")
            deployment.publish(second)
            loop.kill()  # no commit, no abort: the next owner's producers fence its transactions
            loop.wait()
            loop = start_loop(deployment, log)
            copies = deployment.wait_for("decisions", len(entries))
            deployment.wait_consumed("signals")
            loop.send_signal(signal.SIGTERM)
            assert loop.wait(timeout=60) == 0, (tmp_path / "loop.log").read_text()
        finally:
            if loop.poll() is None:
                loop.kill()
    signals = deployment.read("signals")
    assert len(signals) == len(entries)
    assert Counter((r.partition, r.key, r.value) for r in copies) == \
        Counter((r.partition, r.key, r.value) for r in signals)
