"""Helpers of `make chaos` and `make bench-recovery` that decide what their figures say."""

from __future__ import annotations

import json

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streams.bench import chaos
from streams.bench.generate import spread_signals
from streams.bench.recovery import cached_records, changelog_records


def test_a_rolling_restart_counts_only_rebalances_that_took_partitions(tmp_path):
    worker = chaos.Worker("w", tmp_path, {})
    (worker.workdir / "worker.log").write_text(
        "[x] [1] [INFO] streams.worker: rebalance: 0 partitions revoked\n"  # a process starting
        "[x] [1] [INFO] streams.worker: rebalance: 40 partitions assigned\n"
        "[x] [1] [INFO] streams.worker: rebalance: 40 partitions revoked\n"  # a rebalance
        "[x] [2] [INFO] streams.worker: rebalance: 0 partitions revoked\n")
    assert worker.revocations() == 1


def test_chaos_refuses_a_fault_it_does_not_know(capsys):
    with pytest.raises(SystemExit) as exit_:
        chaos.main(["--faults", "worker kill,disk full"])
    assert exit_.value.code == 2
    assert "--faults: unknown disk full" in capsys.readouterr().err


def test_the_bulk_state_is_one_exposure_record_per_portfolio_on_its_signals_partition():
    entries = list(spread_signals(300, 300, seed=4))
    records = list(changelog_records(entries, 6))
    signals = {value["portfolio_id"]: value["signal_id"] for role, value in entries if role == "signals"}
    partitioner = DefaultPartitioner()
    by_key = {key.decode(): (table, value, partition) for table, key, value, partition in records
              if table == "exposure"}
    assert set(by_key) == set(signals)
    for portfolio, (_, value, partition) in by_key.items():
        assert partition == partitioner(portfolio.encode(), list(range(6)), None)
        # the state of a portfolio that decided its signal: the signal is in its dedupe window
        assert signals[portfolio] in json.dumps(json.loads(value))
    assert {table for table, *_ in records} <= {"exposure", "streak", "controls", "windows"}


def test_the_bulk_state_read_back_from_its_cache_is_the_same(tmp_path):
    entries = list(spread_signals(50, 50, seed=5))
    built = list(cached_records(entries, 6, 50, tmp_path))
    assert [path.suffix for path in tmp_path.iterdir()] == [".pickle"]
    assert list(cached_records(entries, 6, 50, tmp_path)) == built == list(changelog_records(entries, 6))
