"""The transactions run's pure parts: the bare loop's options, the offsets a batch's
transaction commits, the marker waits it counts and the line it prints them on, the
schedule that alternates the two forms run by run, and the figures' summaries."""

from __future__ import annotations

import argparse
import math
from collections import Counter
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition

from streams.bench.bare_loop import (
    COUNTS_LINE, LoopOptions, batch_offsets, loop_counts, loop_options, refused_as_concurrent,
)
from streams.bench.stream import parse_rounds, parse_switches
from streams.bench.transactions import Setting, Variant, schedule, spread


def test_the_loop_runs_per_partition_with_a_2_ms_marker_wait_unless_told_otherwise():
    assert loop_options({}) == LoopOptions("per_partition", 0.002, 0.0)
    assert loop_options({"BENCH_TRANSACTIONS": "per_batch", "BENCH_MARKER_WAIT_MS": "20",
                         "BENCH_PAUSE_IN_TRANSACTION_S": "1.5"}) == LoopOptions("per_batch", 0.02, 1.5)


@pytest.mark.parametrize("variable, value", [
    ("BENCH_TRANSACTIONS", "per_worker"),
    ("BENCH_MARKER_WAIT_MS", "0"),
    ("BENCH_MARKER_WAIT_MS", "2.5"),
    ("BENCH_MARKER_WAIT_MS", "-3"),
    ("BENCH_PAUSE_IN_TRANSACTION_S", "-1"),
    ("BENCH_PAUSE_IN_TRANSACTION_S", "soon"),
    ("BENCH_PAUSE_IN_TRANSACTION_S", "nan"),
])
def test_a_bad_loop_option_is_refused_naming_the_variable(variable, value):
    with pytest.raises(ValueError, match=f"^{variable}: .*{value!r}"):
        loop_options({variable: value})


def record(offset: int) -> SimpleNamespace:
    return SimpleNamespace(offset=offset)


def test_a_batch_commits_the_offset_after_the_last_record_of_each_partition_it_holds():
    a, b, c = TopicPartition("s", 0), TopicPartition("s", 3), TopicPartition("s", 5)

    offsets = batch_offsets({a: [record(7), record(8), record(9)], b: [record(0)], c: []})

    assert offsets == {a: 10, b: 1}


def test_only_concurrent_transactions_counts_as_a_marker_wait():
    # error codes: 0 none, 51 CONCURRENT_TRANSACTIONS, 15 COORDINATOR_NOT_AVAILABLE
    assert refused_as_concurrent([("d", [(0, 0), (1, 51)])]) is True
    assert refused_as_concurrent([("d", [(0, 0)]), ("e", [(2, 51)])]) is True
    assert refused_as_concurrent([("d", [(0, 0), (1, 15)])]) is False
    assert refused_as_concurrent([]) is False


def test_the_counts_line_the_loop_prints_is_read_back_the_last_one_winning():
    log = "\n".join(["bare loop ready (per_batch, marker wait 2 ms)",
                     COUNTS_LINE.format(transactions=3, records=40, marker_waits=1, produce_retries=0),
                     "something else",
                     COUNTS_LINE.format(transactions=1203, records=15020, marker_waits=87, produce_retries=9), ""])

    assert loop_counts(log) == (1203, 15020, 87, 9)
    assert loop_counts("bare loop ready\nTraceback ...") is None


def test_the_schedule_alternates_the_forms_run_by_run_and_reverses_their_order_every_other_round():
    steps = schedule(2, (True, False), (20, 2))

    # 2 rounds x 2 verifications x 2 waits x 2 kinds x 2 forms, each variant twice per kind
    assert len(steps) == 32
    assert Counter((s.form, s.setting, s.kind) for s in steps) == {
        (form, Setting(v, w), kind): 2 for form in ("per_partition", "per_batch") for v in (True, False)
        for w in (20, 2) for kind in ("throughput", "latency")}
    for first, second in zip(steps[::2], steps[1::2]):
        assert (first.round, first.setting, first.kind) == (second.round, second.setting, second.kind)
        assert {first.form, second.form} == {"per_partition", "per_batch"}
    assert [s.form for s in steps[:2]] == ["per_partition", "per_batch"]
    assert [s.form for s in steps[16:18]] == ["per_batch", "per_partition"]
    # the broker setting changes once per verification value and round: on, off, off, on
    changes = [s.setting.verification for i, s in enumerate(steps)
               if i == 0 or (s.round, s.setting.verification) != (steps[i - 1].round, steps[i - 1].setting.verification)]
    assert changes == [True, False, False, True]
    assert [s.setting.marker_wait_ms for s in steps[:16:4]] == [20, 2, 20, 2]
    assert [s.setting.marker_wait_ms for s in steps[16::4]] == [2, 20, 2, 20]


def test_a_variant_sums_its_latency_runs_counts_before_dividing():
    variant = Variant("per_batch", Setting(True, 2), counts=[(100, 1000, 10, 0), (300, 1400, 50, 20)])

    assert variant.per_transaction(1) == 6.0  # 2,400 / 400, not the mean of 10 and 4.67
    assert variant.per_transaction(2) == 0.15
    assert variant.per_transaction(3) == 0.05
    assert math.isnan(Variant("per_batch", Setting(True, 2)).per_transaction(1))  # no runs


def test_spread_is_the_median_and_the_range_of_the_runs():
    assert spread([30.0, 10.0, 20.0]) == "20.0 (10.0-30.0)"
    assert spread([5_000.4, 7_000.6], digits=0) == "6,000 (5,000-7,001)"
    assert spread([12.34]) == "12.3"
    assert spread([]) == "-"


def test_rounds_and_verification_switches_are_parsed_and_bad_ones_refused():
    assert parse_rounds("3") == 3
    assert parse_switches("on,off") == (True, False)
    assert parse_switches("off") == (False,)
    for bad in ("0", "1,2", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_rounds(bad)
    for bad in ("", "on,on", "yes"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_switches(bad)
