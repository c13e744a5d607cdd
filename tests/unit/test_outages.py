"""A lost broker: one WARNING per broker per outage, a metric, one line when it is back."""

from __future__ import annotations

import logging

from streams.kafka.outages import BrokerOutages


def aiokafka_line(logger: str, level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(logger, level, __file__, 1, msg, args, None)


def test_one_warning_per_broker_per_outage_and_one_line_when_it_is_back(caplog):
    now = [100.0]
    changes: list[tuple[str, bool]] = []
    outages = BrokerOutages(quiet_s=15, clock=lambda: now[0])
    outages.on_change = lambda source, unavailable: changes.append((source, unavailable))
    passed = []
    for second in range(10):  # broker 2 lost for 10 s: every client retries several times a second
        now[0] = 100.0 + second
        for _ in range(50):
            for record in (aiokafka_line("aiokafka.client", logging.ERROR, "Unable connect to node with id %s: %s",
                                         2, "[Errno 111] Connect call failed"),
                           aiokafka_line("aiokafka.consumer.fetcher", logging.ERROR,
                                         "Failed fetch messages from %s: %s", 2, "NodeNotReadyError"),
                           aiokafka_line("aiokafka.consumer.group_coordinator", logging.ERROR,
                                         "Error sending %s to node %s [%s] -- marking coordinator dead",
                                         "HeartbeatRequest", 2, "NodeNotReadyError"),
                           aiokafka_line("aiokafka.consumer.group_coordinator", logging.ERROR,
                                         "Heartbeat send request failed: %s. Will retry.", "RequestTimedOut")):
                if outages.filter(record):
                    passed.append(record)
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in passed] == [
        ("WARNING", "Kafka broker 2 unavailable"), ("WARNING", "Kafka group coordinator unavailable")]
    assert "Connect call failed" in passed[0].getMessage()  # the cause, once
    assert changes == [("broker 2", True), ("group coordinator", True)]

    now[0] = 120.0  # 11 s quiet: not yet back
    assert outages.expire() == []
    now[0] = 124.0
    with caplog.at_level(logging.INFO, logger="streams.kafka"):
        ended = outages.expire()
    assert sorted(source for source, _, _ in ended) == ["broker 2", "group coordinator"]
    assert dict((s, held) for s, _, held in ended)["broker 2"] == 3 * 500 - 1
    assert changes[2:] == [("broker 2", False), ("group coordinator", False)]
    assert len(caplog.records) == 2 and "taken as back" in caplog.records[0].getMessage()
    # a new outage of the same broker is a new warning
    assert outages.filter(aiokafka_line("aiokafka.client", logging.ERROR, "Unable connect to node with id %s: %s",
                                        2, "refused"))


def test_every_other_line_passes_untouched():
    outages = BrokerOutages()
    for record in (aiokafka_line("aiokafka.consumer.group_coordinator", logging.ERROR,
                                 "Attempt to join group failed due to fatal error: %s", "boom"),
                   aiokafka_line("aiokafka.client", logging.DEBUG, "Unable connect to node with id %s: %s", 1, "x"),
                   aiokafka_line("streams.worker", logging.ERROR, "Unable connect to node with id %s: %s", 1, "x")):
        level = record.levelname
        assert outages.filter(record) and record.levelname == level
