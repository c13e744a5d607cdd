"""`sizer evaluate`'s figures, bootstrap and verdicts on series small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from streams.history import evaluate as ev

DAY = ev.DAY_MS


def daily(pnl, closes=None, returns=None, exposure=None, cap=None, start=1000.0):
    n = len(pnl)
    d = ev.Daily.empty(0, n, start)
    d.pnl = list(map(float, pnl))
    d.closes = list(closes or [0] * n)
    returns = returns or [[] for _ in range(n)]
    d.returns_sum = [sum(r) for r in returns]
    d.returns_sq = [sum(x * x for x in r) for r in returns]
    d.exposure_ms = [float(e) * DAY for e in (exposure or [0] * n)]
    d.cap_ms = [float(c) * DAY for c in (cap or [0] * n)]
    return d


def measured(d):
    return {k: v[0] for k, v in ev.figures(d, np.arange(len(d.pnl))[None, :]).items()}


def test_drawdown_and_recovery_of_a_path_checked_by_hand():
    # equity 1000 -> 1100 -> 1050 -> 990 -> 1020 -> 1100 -> 1120
    d = daily([100, -50, -60, 30, 80, 20], exposure=[500] * 6, cap=[1000] * 6)
    f = measured(d)
    assert f["max_drawdown"] == pytest.approx(110)  # 1100 -> 990
    assert f["recovery_days"] == 2  # trough on day 2, back to 1100 on day 4
    assert f["recovered"]
    assert f["pnl"] == pytest.approx(120)
    assert f["drawdown_per_exposure"] == pytest.approx(110 / 500)
    assert f["capital_efficiency"] == pytest.approx(120 / 500)
    assert f["cap_use_pct"] == pytest.approx(50)


def test_a_drawdown_never_recovered_counts_the_days_to_the_end():
    d = daily([-10, -20, 5, 0])  # 1000 -> 990 -> 970 -> 975 -> 975
    f = measured(d)
    assert f["max_drawdown"] == pytest.approx(30)
    assert f["recovery_days"] == 2  # trough day 1, end day 3
    assert not f["recovered"]


def test_a_fall_below_the_starting_equity_counts_from_the_start():
    f = measured(daily([-50, 60]))
    assert f["max_drawdown"] == pytest.approx(50)
    assert f["recovery_days"] == 1


def test_sharpe_is_per_close_annualised_by_closes_per_year():
    # 4 closes over 365.25 days: returns 0.01, 0.03, -0.01, 0.01 -> mean 0.01, sd 0.016330
    returns = [[0.01, 0.03], [], [-0.01], [0.01]]
    d = daily([0] * 4, closes=[2, 0, 1, 1], returns=returns)
    d_long = ev.Daily.empty(0, 365, 1000.0)
    for name in ("closes", "returns_sum", "returns_sq"):
        getattr(d_long, name)[:4] = getattr(d, name)
    f = {k: v[0] for k, v in ev.figures(d_long, np.arange(365)[None, :]).items()}
    sd = (((0.0) ** 2 + 0.02 ** 2 + 0.02 ** 2 + 0.0 ** 2) / 3) ** 0.5
    assert f["sharpe"] == pytest.approx(0.01 / sd * (4 / (365 / 365.25)) ** 0.5)


def test_sharpe_needs_two_closes_with_dispersion():
    assert np.isnan(measured(daily([0], closes=[1], returns=[[0.02]]))["sharpe"])
    assert np.isnan(measured(daily([0, 0], closes=[1, 1], returns=[[0.02], [0.02]]))["sharpe"])


def test_promise_comparisons():
    drawdown = ev.PROMISES[0]
    assert ev.compare(drawdown, [60.0], [100.0])[0] == pytest.approx(0.4)
    assert np.isnan(ev.compare(drawdown, [60.0], [0.0])[0])
    sharpe = next(p for p in ev.PROMISES if p.name == "sharpe")
    assert ev.compare(sharpe, [0.5], [0.2])[0] == pytest.approx(0.3)
    gain = next(p for p in ev.PROMISES if p.name == "capital_efficiency")
    assert ev.compare(gain, [0.06], [-0.05])[0] == pytest.approx(2.2)


@pytest.mark.parametrize("low, high, defined, expected", [
    (0.31, 0.5, 1.0, "held"), (0.30, 0.5, 1.0, "held"), (-0.2, 0.29, 1.0, "not held"),
    (0.1, 0.35, 1.0, "undecided"), (0.4, 0.5, 0.4, "undecided"), (float("nan"), 0.5, 1.0, "undecided"),
])
def test_verdict_reads_the_promise_lower_bound(low, high, defined, expected):
    assert ev.verdict(low, high, defined, ev.PROMISES[0]) == expected


def test_block_resamples_are_seeded_blocks_of_consecutive_days():
    a = next(ev.block_resamples(50, 7, 30, seed=3))
    b = next(ev.block_resamples(50, 7, 30, seed=3))
    assert a.shape == (30, 50)
    assert (a == b).all()
    assert not (a == next(ev.block_resamples(50, 7, 30, seed=4))).all()
    assert a.min() >= 0 and a.max() <= 49
    for row in a:  # within each block of 7 the days are consecutive
        for k in range(0, 49, 7):
            block = row[k:k + 7]
            assert (np.diff(block) == 1).all()


def test_exposure_is_time_weighted_over_calendar_days():
    class Run:
        accepted, rejected = 2, {}
        closes = []
        # portfolio 0: 100 from noon of day 0; portfolio 1: 50 from day 1 00:00 to day 1 12:00
        exposure = [(DAY // 2, 0, 0, ev.Decimal(100), ev.Decimal(1000)),
                    (DAY, 1, 1, ev.Decimal(50), ev.Decimal(1000)),
                    (DAY + DAY // 2, 2, 1, ev.Decimal(0), ev.Decimal(1000))]
    d = ev.daily_of(Run, 0, 2, ev.Decimal(2000))
    assert d.exposure_ms == pytest.approx([100 * DAY / 2, 100 * DAY + 50 * DAY / 2])
    assert d.start_equity == 2000


def test_block_resamples_in_chunks_are_the_same_rows_as_one_draw():
    import numpy as np

    whole = next(ev.block_resamples(203, 20, 1000, seed=7))
    for chunk in (1, 250, 257):
        parts = list(ev.block_resamples(203, 20, 1000, seed=7, chunk=chunk))
        assert max(len(p) for p in parts) == chunk
        assert (np.concatenate(parts) == whole).all()
