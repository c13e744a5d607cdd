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
