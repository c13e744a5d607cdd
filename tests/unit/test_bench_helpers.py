"""The benchmark's pure helpers: the soak's RSS slope, the scale run's arithmetic, the
generators and the simulated desk (figures computed by hand)."""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from decimal import Decimal

import pytest

from streams.bench.generate import spread_signals
from streams.bench.soak import Desk, Trend, default_warm_up, least_squares, report, rss_parts_mb, rss_trend, Minute
from streams.bench.stream import (
    histogram_quantile, parse_counts, parse_runs, ratio, rss_per_thousand, scale_backlog, worker_stages,
)


def test_least_squares_slope_and_standard_error_match_the_hand_computation():
    # mean x 2.5, mean y 12.5, Sxx 5, Sxy 8: slope 1.6, intercept 8.5;
    # residuals -0.1, 0.3, -0.3, 0.1: SSR 0.2, stderr sqrt(0.2 / 2 / 5)
    trend = least_squares([(1, 10), (2, 12), (3, 13), (4, 15)])

    assert trend.slope == pytest.approx(1.6)
    assert trend.stderr == pytest.approx(math.sqrt(0.02))
    assert trend.points == 4
    assert trend.within_noise is False


def test_a_noisy_flat_series_is_within_noise_of_zero():
    # Sxy -1: slope -0.2; residuals -0.3, 0.9, -0.9, 0.3: SSR 1.8, stderr sqrt(0.18) = 0.424
    trend = least_squares([(1, 100), (2, 101), (3, 99), (4, 100)])

    assert trend.slope == pytest.approx(-0.2)
    assert trend.stderr == pytest.approx(math.sqrt(0.18))
    assert trend.within_noise is True


def test_a_constant_series_has_zero_slope_within_noise():
    trend = least_squares([(1, 50.0), (2, 50.0), (3, 50.0)])

    assert (trend.slope, trend.stderr, trend.within_noise) == (0.0, 0.0, True)


def test_two_points_give_a_slope_but_no_noise_estimate():
    trend = least_squares([(1, 10), (3, 14)])

    assert trend.slope == pytest.approx(2.0)
    assert math.isnan(trend.stderr)
    assert trend.within_noise is None


@pytest.mark.parametrize("points", [[], [(1, 1.0)], [(2, 1.0), (2, 3.0)]])
def test_a_slope_of_too_few_points_or_one_x_is_refused(points):
    with pytest.raises(ValueError):
        least_squares(points)


def test_rss_trend_leaves_the_warm_up_minutes_out():
    # minutes 1-2 climb steeply (warm-up); 3-5 rise 1 MB a minute
    rss = [(1, 100.0), (2, 150.0), (3, 160.0), (4, 161.0), (5, 162.0)]

    trend = rss_trend(rss, warm_up_minutes=2)

    assert trend == Trend(pytest.approx(1.0), pytest.approx(0.0), 3)
    assert rss_trend(rss, warm_up_minutes=4) is None


def test_the_default_warm_up_is_five_minutes_or_a_third_of_a_short_soak():
    assert [default_warm_up(m) for m in (30, 15, 9, 2)] == [5, 5, 3, 0]


def test_the_report_says_when_the_minutes_are_too_few_to_judge():
    def minute(m: int, rss: float) -> Minute:
        return Minute(m, rss, 5.0, 60_000, 0, 60_000, 500, 100, 0)

    assert "too few minutes" in report([minute(1, 100.0)], 0)
    assert "noise unknown" in report([minute(1, 100.0), minute(2, 101.0)], 0)
    assert "within noise of zero" in report([minute(m, 100.0) for m in range(1, 5)], 0)
    assert "NOT within noise" in report([minute(m, 100.0 + m) for m in range(1, 5)], 0)


SMAPS = """\
55d0c0a00000-55d0c0b00000 rw-p 00000000 00:00 0                          [heap]
Size:               1024 kB
Rss:                 800 kB
7f0000000000-7f0004000000 rw-p 00000000 00:00 0 
Size:              65536 kB
Rss:                2048 kB
Anonymous:          2048 kB
7f0004000000-7f0004100000 rw-p 00000000 00:00 0                          [anon:glibc]
Rss:                 512 kB
7f1000000000-7f1000200000 r-xp 00000000 08:01 1234                       /usr/lib/librocksdb.so.8
Rss:                1536 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                 132 kB
"""


def test_the_rss_is_split_into_heap_anonymous_and_file_mappings_stacks_left_out():
    assert rss_parts_mb(SMAPS) == {"heap": 800 / 1024, "anon": 2.5, "files": 1.5}


def test_the_report_gives_each_kind_of_mappings_slope():
    minutes = [Minute(m, 100.0 + m, 5.0, 60_000, 0, 60_000, 500, 100, 0,
                      {"heap": 50.0, "anon": 30.0 + m, "files": 20.0}) for m in range(1, 6)]
    text = report(minutes, 0)
    assert "heap +0.000 ± 0.000" in text and "anon +1.000 ± 0.000" in text and "files +0.000" in text


def test_rss_per_thousand_portfolios_runs_from_the_smallest_to_the_largest_count():
    # (190 - 90) MB over (100,000 - 100) / 1,000 = 99.9 thousand portfolios
    assert rss_per_thousand([(10_000, 100.0), (100, 90.0), (100_000, 190.0)]) == pytest.approx(100 / 99.9)
    assert math.isnan(rss_per_thousand([(100, 90.0)]))


def test_the_scale_backlog_covers_the_largest_portfolio_count_twice():
    assert scale_backlog(60_000, (100, 10_000, 100_000)) == 200_000
    assert scale_backlog(60_000, (100, 1_000)) == 60_000


def test_ratios_print_a_dash_without_a_base():
    assert ratio(3_000.0, 6_000.0) == "0.50"
    assert ratio(3_000.0, None) == "-"
    assert ratio(3_000.0, 0.0) == "-"
    assert ratio(float("nan"), 6_000.0) == "-"


def test_runs_and_portfolio_counts_are_parsed_and_bad_ones_refused():
    assert parse_runs("latency, hog") == ("latency", "hog")
    assert parse_counts("100,10_000") == (100, 10_000)
    for bad in ("latency,speed", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_runs(bad)
    for bad in ("0", "x", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_counts(bad)


def test_spread_signals_touch_every_portfolio():
    entries = list(spread_signals(2_000, 1_000, seed=1))

    signals = [value for role, value in entries if role == "signals"]
    assert len(signals) == 2_000
    assert {s["portfolio_id"] for s in signals} == {f"p{n}" for n in range(1_000)}
    assert [role for role, _ in entries[:4]] == ["instruments"] * 4


def test_the_desk_fills_every_leg_in_full_then_closes_or_else_cancels():
    desk = Desk(seed=3)
    orders = [{"order_id": f"o-{n}", "portfolio_id": "p1", "symbol": "BTC-PERP-BASIS", "qty": "0.013",
               "price": "50000", "legs": [{"venue_symbol": "BTCUSDT", "qty": "0.013"},
                                          {"venue_symbol": "BTCUSDT-PERP", "qty": "0.013"}]} for n in range(200)]
    for order in orders:
        desk.on_order(order, now=0.0)

    events = [value for _, value in desk.due(1e9)]
    by_order: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        by_order[event.get("order_id", "")].append(event)
    closes = [e for e in events if e["type"] == "position_closed"]
    canceled = {e["order_id"] for e in events if e["type"] == "order_canceled"}
    filled = {e["order_id"] for e in events if e["type"] == "order_filled"}
    assert not canceled & filled
    assert canceled | filled == {o["order_id"] for o in orders}
    assert len(closes) == len(filled)
    for order_id in filled:
        unique = {e["event_id"]: e for e in by_order[order_id]}.values()  # repeats are the same event
        for leg in ("BTCUSDT", "BTCUSDT-PERP"):
            parts = [e for e in unique if e["venue_symbol"] == leg]
            assert sum(Decimal(e["qty"]) for e in parts) == Decimal("0.013")
            assert [e["final"] for e in parts][-1] is True
    assert 0 < len(canceled) < 60
    assert len(events) > len({e["event_id"] for e in events})  # some fills were sent twice


def test_histogram_quantile_interpolates_within_the_bucket_as_prometheus_does():
    # 10 observations: 4 up to 10 ms, 5 more up to 20 ms, 1 more up to 50 ms
    buckets = [(0.01, 4.0), (0.02, 9.0), (0.05, 10.0), (float("inf"), 10.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.012)  # rank 5: 1/5 into (10, 20]
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.047)  # rank 9.9: 0.9 into (20, 50]
    assert histogram_quantile(0.4, buckets) == pytest.approx(0.01)
    # a rank in +Inf gives the highest finite bound; no observations give nan
    assert histogram_quantile(0.99, [(0.01, 1.0), (float("inf"), 3.0)]) == 0.01
    assert math.isnan(histogram_quantile(0.5, [(0.01, 0.0), (float("inf"), 0.0)]))


def test_worker_stages_read_the_batch_and_commit_histograms_of_a_metrics_page():
    from prometheus_client import CollectorRegistry, generate_latest

    from streams.metrics import SizerMetrics

    registry = CollectorRegistry()
    metrics = SizerMetrics(registry)
    for seconds in (0.004, 0.006, 0.008, 0.012):
        metrics.batch_seconds.observe(seconds)
    metrics.commit_seconds.observe(0.03)

    stages = worker_stages(generate_latest(registry).decode())

    metrics.gc_pause_seconds.labels("2").observe(0.04)
    stages = worker_stages(generate_latest(registry).decode())
    assert stages["sizer_gc_pause_seconds{2}"].count == 1 and stages["sizer_gc_pause_seconds{2}"].mean_ms == 40
    batch, commit = stages["sizer_batch_seconds"], stages["sizer_commit_seconds"]
    assert batch.count == 4 and batch.mean_ms == pytest.approx(7.5)
    # rank 2 of 4: 1 observation up to 5 ms, 2 in (5, 10] ms, so half-way into that bucket
    assert batch.p50_ms == pytest.approx(7.5)
    assert commit.count == 1 and commit.p99_ms == pytest.approx(20 + 30 * 0.99)  # within (20, 50] ms


def test_the_scale_runs_reservations_lapse_so_every_count_accepts_the_same_signals(monkeypatch):
    """The scale run compares portfolio counts on the same work: with its settings
    every signal of the backlog is accepted, at 100 portfolios as at 1,000; without
    them the fewer portfolios' caps fill and most signals are rejected."""
    from collections import Counter

    from streams.bench.generate import spread_signals
    from streams.bench.stream import SCALE_SETTINGS
    from streams.config import load_config
    from streams.processor import MemoryStore, Processor
    from streams.wire.models import Instrument, Signal, validate

    def outcomes(portfolios):
        config = load_config("conviction")
        proc, counts = Processor(config, MemoryStore(config)), Counter()
        for topic, value in spread_signals(3_000, portfolios, seed=13):
            if topic == "instruments":
                proc.on_instrument(validate(Instrument, value))
            else:
                counts[proc.on_signal(validate(Signal, value)).decision.outcome] += 1
        return counts

    assert outcomes(100)["rejected"] > 2_000
    for name, value in SCALE_SETTINGS.items():
        if name.startswith("SIZING_"):
            monkeypatch.setenv(name, value)
    assert outcomes(100) == outcomes(1_000) == Counter(accepted=3_000)


def test_the_workers_own_account_is_summed_from_its_metrics_and_sloped_in_the_report():
    from streams.bench.soak import accounts_mb

    text = """\
# TYPE sizer_store_memory_bytes gauge
sizer_store_memory_bytes{kind="memtables",table="exposure"} 2097152.0
sizer_store_memory_bytes{kind="memtables",table="windows"} 1048576.0
sizer_store_memory_bytes{kind="table_readers",table="windows"} 524288.0
sizer_store_memory_bytes{kind="block_cache",table="windows"} 9999999.0
# TYPE sizer_malloc_bytes gauge
sizer_malloc_bytes{arena="threads",kind="system"} 4194304.0
sizer_malloc_bytes{arena="threads",kind="free"} 1048576.0
sizer_malloc_bytes{arena="mmapped",kind="system"} 3145728.0
"""
    assert accounts_mb(text) == {"memtab": 3.0, "readers": 0.5, "thr": 4.0, "mmap": 3.0}
    minutes = [Minute(m, 100.0 + m, 5.0, 60_000, 0, 60_000, 500, 100, 0, {}, {"memtab": 2.0 * m, "thr": 4.0})
               for m in range(1, 6)]
    assert "the worker's own account, MB/min: memtab +2.000 ± 0.000, thr +0.000 ± 0.000" in report(minutes, 0)
