from prometheus_client import CollectorRegistry

from streams.config import load_config
from streams.engine import PortfolioState
from streams.engine.pipeline import REJECTION_REASONS
from streams.errors import INPUT_ERROR_CODES
from streams.metrics import SizerMetrics


def sample(registry, name, **labels):
    return registry.get_sample_value(name, labels)


def test_every_decision_reason_and_dead_letter_code_starts_at_zero():
    registry = CollectorRegistry()
    SizerMetrics(registry)
    for reason in REJECTION_REASONS:
        assert sample(registry, "sizer_decisions_total", outcome="rejected", reason=reason) == 0
    assert sample(registry, "sizer_decisions_total", outcome="accepted", reason="") == 0
    for code in INPUT_ERROR_CODES:
        assert sample(registry, "sizer_dead_letters_total", topic="signals", reason=code) == 0


def test_portfolio_series_keep_the_most_recently_active_within_the_limit():
    registry = CollectorRegistry()
    metrics = SizerMetrics(registry, portfolio_limit=2)
    config = load_config("conviction")
    state = PortfolioState.fresh(config)
    for portfolio in ("a", "b", "a", "c"):
        metrics.portfolio_state(portfolio, state, config)

    assert sample(registry, "sizer_portfolio_cap_usd", portfolio="a") == 5000
    assert sample(registry, "sizer_portfolio_cap_usd", portfolio="c") == 5000
    assert sample(registry, "sizer_portfolio_cap_usd", portfolio="b") is None
    assert sample(registry, "sizer_portfolio_series") == 2
    assert sample(registry, "sizer_portfolio_series_dropped_total") == 1


def test_series_of_partitions_that_moved_away_are_removed_and_the_rest_kept():
    registry = CollectorRegistry()
    metrics = SizerMetrics(registry)
    config = load_config("conviction")
    state = PortfolioState.fresh(config)
    metrics.portfolio_state("kept", state, config, partition=1)
    metrics.portfolio_state("moved", state, config, partition=4)
    metrics.lag([("signals", 1, 0), ("fills", 1, 2), ("signals", 4, 7), ("fills", 4, 0)])

    removed = metrics.retain([0, 1, 2])

    assert removed == (2, 1)
    assert sample(registry, "sizer_portfolio_exposure_usd", portfolio="kept") == 0
    assert sample(registry, "sizer_portfolio_exposure_usd", portfolio="moved") is None
    assert sample(registry, "sizer_portfolio_drawdown_mode", portfolio="moved") is None
    assert sample(registry, "sizer_consumer_lag_messages", topic="fills", partition="1") == 2
    assert sample(registry, "sizer_consumer_lag_messages", topic="signals", partition="4") is None
    assert sample(registry, "sizer_portfolio_series") == 1


def test_build_info_and_process_metrics_are_exported():
    from streams.metrics import process_collectors

    registry = CollectorRegistry()
    process_collectors(registry)
    SizerMetrics(registry).built("0.1.0", "abcd", "exactly_once")
    assert sample(registry, "sizer_build_info", version="0.1.0", config_hash="abcd",
                  processing_guarantee="exactly_once") == 1
    assert sample(registry, "process_resident_memory_bytes") > 0
    assert sample(registry, "process_start_time_seconds") > 0


def test_portfolio_figures_are_read_from_the_latest_state_at_each_scrape():
    from decimal import Decimal

    from streams.engine.state import Book, Exposure, reservation

    registry = CollectorRegistry()
    metrics = SizerMetrics(registry)
    config = load_config("conviction")
    fresh = PortfolioState.fresh(config)
    metrics.portfolio_state("p", fresh, config)
    assert sample(registry, "sizer_portfolio_reserved_usd", portfolio="p") == 0

    held = Book({"o-1": reservation("BTC-USDT", Decimal("0.5"), Decimal("400"), 1)})
    metrics.portfolio_state("p", fresh._replace(exposure=Exposure(reservations=held)), config)

    # 0.5 x 400 reserved against the conviction preset's 5,000 USD cap
    assert sample(registry, "sizer_portfolio_reserved_usd", portfolio="p") == 200
    assert sample(registry, "sizer_portfolio_exposure_usd", portfolio="p") == 200
    assert sample(registry, "sizer_portfolio_cap_utilisation_ratio", portfolio="p") == 0.04
    assert sample(registry, "sizer_portfolio_series") == 1


def test_every_garbage_collection_is_timed_by_generation():
    import gc

    registry = CollectorRegistry()
    metrics = SizerMetrics(registry)
    callback = metrics.time_collections()
    try:
        before = sample(registry, "sizer_gc_pause_seconds_count", generation="2")
        gc.collect()
        gc.collect(1)
    finally:
        gc.callbacks.remove(callback)
    assert sample(registry, "sizer_gc_pause_seconds_count", generation="2") == before + 1
    assert sample(registry, "sizer_gc_pause_seconds_count", generation="1") >= 1
    assert sample(registry, "sizer_gc_pause_seconds_sum", generation="2") > 0


def test_cooldowns_and_loss_guard_pauses_are_gauged_at_each_portfolios_clock():
    from streams.config import SizingConfig
    from tests.builders import T0, closed, instrument, signal
    from tests.unit.engine_helpers import feed, processor

    registry = CollectorRegistry()
    metrics = SizerMetrics(registry)
    config = SizingConfig.from_effective({
        **load_config("conviction").effective(), "cooldown_after_loss_s": "600", "loss_guard_count": 2,
        "loss_guard_window_s": "3600", "loss_guard_pause_s": "60"})
    proc = processor(config)
    feed(proc, [instrument("ETH"), closed("a", "ETH", "1", "90", "-10"), closed("b", "ETH", "1", "90", "-10"),
                closed("b", "ETH", "1", "90", "-10", ts=T0 + 1000), signal("a", "ETH", "1", "100", ts=T0 + 601_000)])
    for portfolio in ("a", "b"):
        metrics.portfolio_state(portfolio, proc.store.load(portfolio), config)

    assert sample(registry, "sizer_portfolio_symbols_in_cooldown", portfolio="a") == 0  # its clock passed it
    assert sample(registry, "sizer_portfolio_symbols_in_cooldown", portfolio="b") == 1
    assert sample(registry, "sizer_portfolio_loss_guard_paused", portfolio="a") == 0
    assert sample(registry, "sizer_portfolio_loss_guard_paused", portfolio="b") == 1
    assert sample(registry, "sizer_portfolios_in_cooldown") == 1
    assert sample(registry, "sizer_portfolios_loss_guard_paused") == 1
    for reason in ("COOLDOWN", "LOSS_GUARD", "RATE_LIMITED", "GROUP_CAP_REACHED", "NOTHING_TO_REDUCE"):
        assert sample(registry, "sizer_decisions_total", outcome="rejected", reason=reason) == 0
