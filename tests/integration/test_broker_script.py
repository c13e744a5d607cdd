"""`make broker` right after `make broker-stop` was asked, on the real broker: the start
waits for the stopping broker to exit and starts a new one that answers; it used to
print the address of the broker going away and leave none running."""

from __future__ import annotations

import subprocess
import time

from tests.integration.harness import BROKER_SCRIPT, Broker


def test_start_during_a_stop_leaves_a_new_broker_that_answers(tmp_path):
    broker = Broker(tmp_path / "kafka")
    broker.start()
    first = int((broker.home / "broker.pid").read_text())
    try:
        stopping = subprocess.Popen(["bash", str(BROKER_SCRIPT), "stop"], env=broker.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # the broker has begun its controlled shutdown: `stop` is waiting for it to exit
        log = broker.home / "broker.log"
        while stopping.poll() is None and not any("shutting down (kafka.server.BrokerServer)" in line
                                                  for line in log.read_text().splitlines()):
            time.sleep(0.05)
        assert stopping.poll() is None, "the broker stopped before the test could start another during the stop"
        started = subprocess.run(["bash", str(BROKER_SCRIPT), "start"], env=broker.env, capture_output=True,
                                 text=True, timeout=180)
        stopping.wait(timeout=60)
        status = subprocess.run(["bash", str(BROKER_SCRIPT), "status"], env=broker.env, capture_output=True,
                                text=True, timeout=30)

        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == broker.bootstrap
        assert f"the previous broker (pid {first}) is still stopping" in started.stderr
        assert status.returncode == 0 and status.stdout.strip() == broker.bootstrap, status.stderr
        assert int((broker.home / "broker.pid").read_text()) != first
    finally:
        broker.stop()
