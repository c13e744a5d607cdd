"""The worker's /health/ready and /health/live, its JSON logs, and its metrics after
partitions move: two workers on the real broker, a real Prometheus scraping both."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from streams.wire.roles import POSITIONED
from tests.builders import T0
from tests.integration.harness import Worker, eventually
from tests.integration.prometheus import api, query

ETH = {"symbol": "ETH-USD", "legs": [{"venue_symbol": "ETHUSDT", "side": "buy", "qty_step": "0.001",
                                       "min_qty": "0.001", "max_qty": None, "min_notional": "5"}]}
PORTFOLIOS = [f"p{i}" for i in range(12)]
FAST_FAILOVER = {"SIZER_SESSION_TIMEOUT_S": "6", "SIZER_HEARTBEAT_INTERVAL_S": "1", "SIZER_LAG_INTERVAL_S": "0.5",
                 "SIZER_LOG_FORMAT": "json"}


def sig(signal_id: str, portfolio: str, ts: int, score: str = "0.9") -> tuple[str, dict[str, Any]]:
    return ("signals", {"signal_id": signal_id, "portfolio_id": portfolio, "symbol": "ETH-USD", "side": "buy",
                        "score": score, "price": "2500", "ts": ts})


def loss(event_id: str, portfolio: str, ts: int) -> tuple[str, dict[str, Any]]:
    return ("fills", {"event_id": event_id, "portfolio_id": portfolio, "ts": ts, "type": "position_closed",
                      "symbol": "ETH-USD", "qty": "0.01", "price": "2500", "realized_pnl": "-5"})


class ReadinessWatch(threading.Thread):
    """Polls a worker's /health/ready every 20 ms and keeps every answer (None: nothing answered)."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(daemon=True)
        self.worker, self.answers, self.done = worker, [], threading.Event()
        self.start()

    def run(self) -> None:
        while not self.done.is_set():
            self.answers.append(self.worker.health("ready"))
            time.sleep(0.02)

    def stop(self) -> list[tuple[int, dict[str, Any]]]:
        self.done.set()
        self.join()
        # one answer taken now: the thread's last poll may predate what the caller waited for
        self.answers.append(self.worker.health("ready"))
        return [answer for answer in self.answers if answer is not None]


def not_ready_then_ready(answers: list[tuple[int, dict[str, Any]]], failing: str) -> bool:
    """Some answer was 503 with check `failing` false, and a later one was 200."""
    first = next((i for i, (status, body) in enumerate(answers) if status == 503 and body[failing] is False), None)
    return first is not None and any(status == 200 for status, _ in answers[first:])


def json_lines(worker: Worker) -> list[dict[str, Any]]:
    """Every line of the worker's log as JSON (any line that is not fails the test)."""
    return [json.loads(line) for line in worker.log().splitlines() if line.strip()]


def test_two_workers_ready_only_when_recovered_and_one_owner_per_portfolio_after_failover(
        deployment, workers, prometheus):
    first = Worker(deployment, ["--preset", "graduated"], dict(FAST_FAILOVER))
    watch = ReadinessWatch(first)
    first.spawn()
    try:
        first.wait_ready()
        answers = watch.stop()
        # before recovery: the web server answers, and says not ready
        assert answers[0][0] == 503 and answers[0][1]["tables_recovered"] is False, answers[0]
        assert answers[-1][0] == 200

        # a second worker joins: the first is not ready during the rebalance, then ready again
        watch = ReadinessWatch(first)
        second = workers("--preset", "graduated", **FAST_FAILOVER)
        first.wait_ready()
        eventually(lambda: not_ready_then_ready([a for a in watch.answers if a], "not_rebalancing"),
                   timeout_s=30, what="the first worker not ready during the rebalance, then ready")
        watch.stop()
        base = prometheus(first.web_port, second.web_port)

        # every portfolio decided; p-drawdown ones in drawdown mode wherever they live
        deployment.publish([("instruments", ETH)] + [sig(f"a-{p}", p, T0) for p in PORTFOLIOS]
                           + [loss(f"l{n}-{p}", p, T0 + n) for p in PORTFOLIOS[:6] for n in (1, 2)])
        deployment.wait_for("decisions", len(PORTFOLIOS))
        deployment.wait_consumed("fills")
        eventually(lambda: sum(query(base, "count(sizer_portfolio_exposure_usd)").values()) == len(PORTFOLIOS),
                   what="every portfolio's exposure in prometheus")
        owners = query(base, "count by (instance) (sizer_portfolio_exposure_usd)")
        assert len(owners) == 2, f"both workers own portfolios: {owners}"
        victim_instance = f"127.0.0.1:{second.web_port}"
        survivor_instance = f"127.0.0.1:{first.web_port}"
        drawdown_on_victim = query(base, f'sizer_portfolio_drawdown_mode{{instance="{victim_instance}"}} == 1')
        assert drawdown_on_victim, "some portfolio in drawdown lives on the worker about to die"

        # kill the second worker: within the session timeout the first owns every partition
        watch = ReadinessWatch(first)
        second.kill()
        eventually(lambda: not_ready_then_ready([a for a in watch.answers if a], "not_rebalancing"),
                   timeout_s=60, what="the survivor not ready during the failover rebalance, then ready")
        watch.stop()
        partitions = deployment.topics["signals"].partitions
        eventually(lambda: query(base, f'count(sizer_consumer_lag_messages{{instance="{survivor_instance}"}})')
                   and list(query(base, f'count(sizer_consumer_lag_messages{{instance="{survivor_instance}"}})')
                            .values()) == [float(len(POSITIONED) * partitions)],
                   timeout_s=30, what="the survivor's lag series for every input partition")

        # every portfolio's next input: its exposure from exactly one worker, the survivor
        deployment.publish([sig(f"b-{p}", p, T0 + 10) for p in PORTFOLIOS])
        deployment.wait_for("decisions", 2 * len(PORTFOLIOS))

        def one_owner_each() -> bool:
            counts = query(base, "count by (portfolio) (sizer_portfolio_exposure_usd)")
            return len(counts) == len(PORTFOLIOS) and set(counts.values()) == {1.0}

        eventually(one_owner_each, timeout_s=30, what="each portfolio's exposure from exactly one worker")
        assert set(query(base, "count by (instance) (sizer_portfolio_exposure_usd)")) == {
            json.dumps({"instance": survivor_instance}, sort_keys=True)}
        lag_instances = query(base, "count by (instance) (sizer_consumer_lag_messages)")
        assert list(lag_instances) == [json.dumps({"instance": survivor_instance}, sort_keys=True)]
        # no portfolio alert on the dead worker's data; the rebalance on the dashboard's query
        for alert in (api(base, "alerts") or {"alerts": []})["alerts"]:
            if alert["labels"]["alertname"] in ("SizerCapUtilisationHigh", "SizerPortfolioInDrawdown"):
                assert alert["labels"]["instance"] == survivor_instance, alert
        assert sum(query(base, "sum(increase(faust_rebalance_done_latency_count[10m]))").values()) >= 1

        # the logs: one JSON object a line, the rebalance with its partitions
        lines = json_lines(first)
        assert {"level", "logger", "message", "timestamp"} <= set(lines[0])
        revoked = [line for line in lines if line.get("event") == "partitions_revoked"]
        assigned = [line for line in lines if line.get("event") == "partitions_assigned"]
        assert len(revoked) >= 2 and len(assigned) >= 3
        assert len([p for p in assigned[-1]["partitions"] if p.startswith(deployment.topics.name("signals") + "[")]) \
            == partitions
    finally:
        if first.alive():
            first.kill()


def delete_topic(bootstrap: str, topic: str) -> None:
    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()

    asyncio.run(run())


def test_live_turns_false_when_processing_is_stuck_and_dead_letters_log_as_json(deployment, workers):
    worker = workers("--preset", "graduated", SIZER_LIVENESS_TIMEOUT_S="3", SIZER_LOG_FORMAT="json")
    deployment.publish([("instruments", ETH), sig("s1", "p1", T0)])
    deployment.publish([("signals", b"{not json")], keys={0: b"p1"})
    deployment.wait_for("decisions", 1)
    deployment.wait_for("dlq", 1)
    assert worker.health("live")[0] == 200

    dead = [line for line in json_lines(worker) if line.get("event") == "dead_letter"]
    assert len(dead) == 1
    assert dead[0]["level"] == "WARNING" and dead[0]["reason"] == "INVALID_JSON"
    assert dead[0]["topic"] == deployment.topics.name("signals") and dead[0]["portfolio"] == "p1"
    assert isinstance(dead[0]["partition"], int) and dead[0]["offset"] == 1  # after s1, same key

    # the decisions topic vanishes: the next decision's send waits for it forever, and
    # the batch under way never ends
    delete_topic(deployment.bootstrap, deployment.topics.name("decisions"))
    deployment.publish([sig("s2", "p1", T0 + 1)])
    eventually(lambda: (answer := worker.health("live")) is not None and answer[0] == 503,
               timeout_s=60, what="/health/live false while processing is stuck")
    status, body = worker.health("live")
    assert body["processing_stuck"] is True and body["batch_running_s"] > 3
