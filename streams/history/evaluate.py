"""`sizer evaluate`: the graduated design's promises tested on real markets.

The graduated design promises, against fixed sizing (the `static` policy: the
per-pair maximum for every signal): max drawdown 30-40% lower, Sharpe 0.2-0.3
higher, recovery time 50% shorter, capital efficiency 15-25% higher
(DESIGN.md, "Audit and replay"). This command builds journals from real price
history with classic strategies (`history.markets`), runs the sweep's engine
(`history.sweep.simulate`) for every policy over every market, and tests each
promise per market and pooled over markets, with a bootstrap interval.

The figures, on the calendar days from a market's first bar to its last
(pooled: the union of the markets' calendars, each day's PnL, exposure and
closes summed over markets):

- equity: the sum of the market's portfolios' starting equity plus the
  cumulative realized PnL at the end of each day.
- `max_drawdown`: the largest fall of that equity from its running peak (USD);
  `drawdown_per_exposure`: that fall per dollar of mean exposure, a drawdown
  comparable between policies that trade at different sizes.
- `recovery_days`: calendar days from the trough of the max drawdown to the
  first day equity is back at the peak it fell from; a drawdown not recovered
  by the end counts the days to the end (censored, shown as such).
- `sharpe`: per-close returns (a close's realized PnL over its portfolio's
  equity before it), mean over sample standard deviation, annualised by the
  square root of the policy's closes per year (Lo 2002, "The Statistics of
  Sharpe Ratios", FAJ 58(4): the sqrt(q) rule for i.i.d. returns).
- `capital_efficiency`: total PnL per dollar of mean exposure (exposure =
  positions + reservations, time-weighted over the calendar);
  `cap_use_pct`: mean exposure as a percentage of the mean cap.

Each promise is a paired comparison of graduated with static over the same
days: drawdown reduction `1 - graduated / static` (absolute and per dollar
of exposure), Sharpe difference `graduated - static`, recovery reduction
`1 - graduated / static`, efficiency gain `(graduated - static) / |static|`.
Its interval comes from a moving-block bootstrap over calendar days (Künsch
1989, "The Jackknife and the Bootstrap for General Stationary Observations",
Ann. Statist. 17(3)): blocks of `block_days` consecutive days drawn with
replacement, the same draw for both policies, `resamples` times, seeded; the
interval is the percentile interval at `confidence`. The verdict reads the
promise's lower bound (30% less drawdown, +0.2 Sharpe, 50% shorter recovery,
15% more efficiency): `held` when the whole interval is at or above it, `not
held` when the whole interval is below it, `undecided` when it straddles it or
fewer than half the resamples define the figure.

PnL, equity and exposure are Decimal through the engine; the statistics over
them (drawdowns of resampled paths, standard deviations) are binary floats,
reported to four decimals: they are estimates, not money on the wire.
"""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator, Sequence

from streams.config import SizingConfig, load_config
from streams.errors import ConfigError
from streams.history import markets as mk
from streams.history.sweep import Configuration, configurations, from_journal, parse_grid, policy_config, \
    simulate, with_values
from streams.wire import journal as wire_journal

DAY_MS = 86_400_000
POLICIES = ("static", "conviction", "graduated")
FIXED, GRADUATED = "static", "graduated"


@dataclass(frozen=True)
class Promise:
    """One promise of the graduated design: its figure, how the pair is compared, the promised range."""

    name: str
    figure: str
    compare: str  # "reduction" 1 - g/f, "difference" g - f, "gain" (g - f) / |f|
    low: float
    high: float
    text: str


PROMISES = (
    Promise("drawdown", "max_drawdown", "reduction", 0.30, 0.40, "max drawdown 30-40% lower (USD)"),
    Promise("drawdown_per_exposure", "drawdown_per_exposure", "reduction", 0.30, 0.40,
            "max drawdown per dollar of exposure 30-40% lower"),
    Promise("sharpe", "sharpe", "difference", 0.20, 0.30, "Sharpe 0.2-0.3 higher"),
    Promise("recovery", "recovery_days", "reduction", 0.50, 0.50, "recovery time 50% shorter"),
    Promise("capital_efficiency", "capital_efficiency", "gain", 0.15, 0.25, "capital efficiency 15-25% higher"),
)


@dataclass
class Daily:
    """One policy's figures per calendar day (index 0 = `first_day`), from one run."""

    first_day: int
    start_equity: float
    pnl: list[float]
    closes: list[int]
    returns_sum: list[float]
    returns_sq: list[float]
    exposure_ms: list[float]  # the integral of exposure over the day, USD x ms
    cap_ms: list[float]
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    @classmethod
    def empty(cls, first_day: int, days: int, start_equity: float) -> "Daily":
        return cls(first_day, start_equity, [0.0] * days, [0] * days, [0.0] * days, [0.0] * days,
                   [0.0] * days, [0.0] * days)

    def add(self, other: "Daily") -> None:
        """Add `other` day by day (pooling markets); its days must lie inside ours."""
        at = other.first_day - self.first_day
        self.start_equity += other.start_equity
        self.accepted += other.accepted
        for reason, n in other.rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + n
        for name in ("pnl", "closes", "returns_sum", "returns_sq", "exposure_ms", "cap_ms"):
            mine, theirs = getattr(self, name), getattr(other, name)
            for i, value in enumerate(theirs):
                mine[at + i] += value


def daily_of(run: Any, first_day: int, days: int, start_equity: Decimal) -> Daily:
    """A run's closes and exposure samples (`sweep.Run`) as calendar-day series."""
    daily = Daily.empty(first_day, days, float(start_equity))
    daily.accepted, daily.rejected = run.accepted, dict(sorted(run.rejected.items()))
    for ts, _, _, pnl, before in run.closes:
        d = ts // DAY_MS - first_day
        daily.pnl[d] += float(pnl)
        daily.closes[d] += 1
        if before:
            r = float(pnl / before)
            daily.returns_sum[d] += r
            daily.returns_sq[d] += r * r
    # exposure and cap are step functions of event time, summed over portfolios
    per_portfolio: dict[int, tuple[Decimal, Decimal]] = {}
    total_e = total_c = 0.0
    last = first_day * DAY_MS
    end = (first_day + days) * DAY_MS
    for ts, _, p, after, cap in run.exposure:
        _accrue(daily, last, min(ts, end), total_e, total_c)
        last = max(last, min(ts, end))
        was_e, was_c = per_portfolio.get(p, (Decimal(0), Decimal(0)))
        total_e += float(after - was_e)
        total_c += float(cap - was_c)
        per_portfolio[p] = (after, cap)
    _accrue(daily, last, end, total_e, total_c)
    return daily


def _accrue(daily: Daily, start: int, stop: int, exposure: float, cap: float) -> None:
    """Add a constant exposure and cap over [start, stop) to the days it covers."""
    while start < stop:
        d = start // DAY_MS
        until = min(stop, (d + 1) * DAY_MS)
        i = d - daily.first_day
        daily.exposure_ms[i] += exposure * (until - start)
        daily.cap_ms[i] += cap * (until - start)
        start = until


# -- figures over (resampled) days ----------------------------------------------------------------------------

def figures(daily: Daily, index: Any) -> dict[str, Any]:
    """The figures of `daily` over the days `index` (a 2-D numpy array: one row per
    path, e.g. the identity for the measured path or bootstrap resamples). Returns
    arrays with one value per row (NaN where a figure is undefined)."""
    import numpy as np

    pnl = np.asarray(daily.pnl)[index]
    equity = daily.start_equity + np.cumsum(pnl, axis=1)
    peaks = np.maximum.accumulate(np.maximum(equity, daily.start_equity), axis=1)
    falls = peaks - equity
    trough = np.argmax(falls, axis=1)
    rows = np.arange(len(index))
    drawdown = falls[rows, trough]
    peak_at_trough = peaks[rows, trough]
    n = index.shape[1]
    later = (equity >= peak_at_trough[:, None]) & (np.arange(n)[None, :] > trough[:, None])
    recovered = later.any(axis=1)
    first_back = np.where(recovered, np.argmax(later, axis=1), n - 1)
    recovery = np.where(drawdown > 0, first_back - trough, 0).astype(float)
    exposure = np.asarray(daily.exposure_ms)[index].sum(axis=1) / (n * DAY_MS)
    cap = np.asarray(daily.cap_ms)[index].sum(axis=1) / (n * DAY_MS)
    total = pnl.sum(axis=1)
    count = np.asarray(daily.closes)[index].sum(axis=1).astype(float)
    s1 = np.asarray(daily.returns_sum)[index].sum(axis=1)
    s2 = np.asarray(daily.returns_sq)[index].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s1 / count
        variance = (s2 - s1 * mean) / (count - 1)
        years = n / 365.25
        sharpe = np.where((count >= 2) & (variance > 1e-30), mean / np.sqrt(variance) * np.sqrt(count / years),
                          np.nan)
        per_exposure = np.where(exposure > 0, drawdown / exposure, np.nan)
        efficiency = np.where(exposure > 0, total / exposure, np.nan)
        cap_use = np.where(cap > 0, exposure / cap * 100, np.nan)
    return {"pnl": total, "max_drawdown": drawdown, "drawdown_per_exposure": per_exposure,
            "recovery_days": recovery, "recovered": recovered | (drawdown <= 0), "sharpe": sharpe,
            "capital_efficiency": efficiency, "cap_use_pct": cap_use, "mean_exposure": exposure,
            "closes": count}


def compare(promise: Promise, graduated: Any, fixed: Any) -> Any:
    """The promise's comparison, elementwise over rows (NaN where undefined)."""
    import numpy as np

    g, f = np.asarray(graduated, dtype=float), np.asarray(fixed, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if promise.compare == "difference":
            return g - f
        if promise.compare == "reduction":
            return np.where(f > 0, 1 - g / f, np.nan)
        return np.where(f != 0, (g - f) / np.abs(f), np.nan)


def block_resamples(days: int, block: int, resamples: int, seed: int, chunk: int | None = None) -> Iterator[Any]:
    """Moving-block bootstrap day indices (Künsch 1989): `resamples` rows of `days`
    indices, each row blocks of `block` consecutive days with uniformly drawn starts,
    yielded `chunk` rows at a time (default: all at once) so that memory stays
    bounded; the rows do not depend on `chunk` (one generator, drawn in order)."""
    import numpy as np

    block = max(1, min(block, days))
    rng = np.random.default_rng(seed)
    count = math.ceil(days / block)
    chunk = max(1, chunk or resamples)
    for done in range(0, resamples, chunk):
        rows = min(chunk, resamples - done)
        starts = rng.integers(0, days - block + 1, size=(rows, count))
        index = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(rows, count * block)
        yield index[:, :days]


def verdict(low: float, high: float, defined: float, promise: Promise) -> str:
    if defined < 0.5 or math.isnan(low) or math.isnan(high):
        return "undecided"
    if low >= promise.low:
        return "held"
    if high < promise.low:
        return "not held"
    return "undecided"


def _r(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else round(value, 4)


@dataclass(frozen=True)
class Settings:
    resamples: int = 1000
    block_days: int = 20
    seed: int = 20261207
    confidence: float = 0.95


def test_promises(series: dict[str, Daily], settings: Settings, fixed_label: str,
                  graduated_label: str) -> list[dict[str, Any]]:
    """Every promise for one market (or the pool): measured, interval, verdict."""
    import numpy as np

    fixed, graduated = series[fixed_label], series[graduated_label]
    days = len(fixed.pnl)
    measured_index = np.arange(days)[None, :]
    measured_f, measured_g = figures(fixed, measured_index), figures(graduated, measured_index)
    # about 2 MB of day indices per chunk, whatever the number of resamples
    chunk = max(1, 250_000 // days)
    boot: dict[str, list[Any]] = {promise.name: [] for promise in PROMISES}
    for index in block_resamples(days, settings.block_days, settings.resamples, settings.seed, chunk):
        boot_f, boot_g = figures(fixed, index), figures(graduated, index)
        for promise in PROMISES:
            boot[promise.name].append(compare(promise, boot_g[promise.figure], boot_f[promise.figure]))
    tail = (1 - settings.confidence) / 2 * 100
    rows = []
    for promise in PROMISES:
        measured = compare(promise, measured_g[promise.figure], measured_f[promise.figure])[0]
        resampled = np.concatenate(boot[promise.name])
        defined = float(np.mean(~np.isnan(resampled)))
        if defined > 0:
            low, high = np.nanpercentile(resampled, [tail, 100 - tail])
        else:
            low = high = float("nan")
        rows.append({"promise": promise.name, "text": promise.text, "promised": [promise.low, promise.high],
                     "graduated": _r(measured_g[promise.figure][0]), "fixed": _r(measured_f[promise.figure][0]),
                     "measured": _r(measured), "interval": [_r(low), _r(high)], "defined": round(defined, 4),
                     "verdict": verdict(float(low), float(high), defined, promise)})
    return rows


def policy_figures(daily: Daily) -> dict[str, Any]:
    import numpy as np

    measured = figures(daily, np.arange(len(daily.pnl))[None, :])
    result: dict[str, Any] = {name: (bool(values[0]) if name == "recovered" else _r(values[0]))
                              for name, values in measured.items()}
    result.update(accepted=daily.accepted, rejected=dict(sorted(daily.rejected.items())))
    return result


# -- running ------------------------------------------------------------------------------------------------

@dataclass
class MarketRun:
    """One market's journal and what each strategy contributed (or why it was skipped)."""

    market: mk.Market
    bars: int
    span: tuple[str, str]
    lines: list[str]
    strategies: dict[str, Any] = field(default_factory=dict)


def recording_config() -> SizingConfig:
    """The configuration the journals are recorded under (markets.RECORDING_TOML)."""
    return with_values(load_config("conviction"), {"enabled": False, "pair_max_usd": str(mk.RECORDED_SIZE),
                                                   "pair_cap_usd": "1000000000", "portfolio_cap": "1000000000"})


def build_market(market: mk.Market, strategies: Sequence[mk.Strategy], bars: mk.Bars | None = None) -> MarketRun:
    """The journal of `market` under `strategies`; a strategy the history is too short
    for, or that gives no signal, is recorded as skipped with the reason."""
    bars = bars if bars is not None else mk.load(market)
    run = MarketRun(market, len(bars), (mk.day_of(bars.times[0]), mk.day_of(bars.times[-1])) if len(bars) else
                    ("", ""), [])
    usable = []
    for strategy in strategies:
        if len(bars) < strategy.warmup + 2:
            run.strategies[strategy.name] = {"skipped": f"{len(bars)} bars, needs at least {strategy.warmup + 2}"}
            continue
        signals = sum(1 for _, _, topic, _ in mk.trades(bars, strategy, strategy.name, "X") if topic == "signals")
        if signals == 0:
            run.strategies[strategy.name] = {"skipped": "no signal over the history"}
            continue
        run.strategies[strategy.name] = {"signals": signals}
        usable.append(strategy)
    if usable:
        run.lines = [wire_journal.line(topic, value) for topic, value in mk.journal(bars, market, usable)]
    return run


_SHARED: dict[str, Any] = {}


def _run_one(task: tuple[str, int]) -> tuple[str, int, Daily]:
    market, k = task
    history, first_day, days = _SHARED["histories"][market]
    configuration: Configuration = _SHARED["chosen"][k]
    config = configuration.config
    run = simulate(history, config)
    start = config.starting_equity * len(history.portfolios)
    return market, k, daily_of(run, first_day, days, start)


def evaluate(runs: Sequence[MarketRun], chosen: list[Configuration], settings: Settings,
             workers: int | None = None) -> tuple[dict[str, Any], dict[str, dict[str, Daily]]]:
    """Every configuration over every market's journal: (the report: figures and
    promises, as JSON data; the day series per market and configuration label).
    Raises ConfigError when `settings.block_days` is more than half a market's days."""
    recorded = recording_config()
    histories: dict[str, tuple[Any, int, int]] = {}
    for run in runs:
        if not run.lines:
            continue
        history = from_journal(run.lines, recorded)
        times = [e[1].ts for e in history.events]
        first_day, last_day = min(times) // DAY_MS, max(times) // DAY_MS
        days = last_day - first_day + 1
        if settings.block_days * 2 > days:
            raise ConfigError(f"--block-days {settings.block_days}: more than half of {run.market.name}'s history "
                              f"({days} days); the bootstrap needs at least two blocks to resample")
        histories[run.market.name] = (history, first_day, days)
    tasks = [(name, k) for name in histories for k in range(len(chosen))]
    _SHARED.update(histories=histories, chosen=chosen)
    try:
        workers = max(1, min(workers or os.cpu_count() or 1, len(tasks) or 1))
        if workers == 1 or "fork" not in multiprocessing.get_all_start_methods():
            results = [_run_one(t) for t in tasks]
        else:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                results = pool.map(_run_one, tasks, chunksize=1)
    finally:
        _SHARED.clear()
    series: dict[str, dict[str, Daily]] = {name: {} for name in histories}
    for name, k, daily in results:
        series[name][chosen[k].label] = daily
    return report(runs, chosen, series, settings), series


def _pooled(series: dict[str, dict[str, Daily]], labels: Sequence[str]) -> dict[str, Daily]:
    first = min(next(iter(s.values())).first_day for s in series.values())
    last = max(next(iter(s.values())).first_day + len(next(iter(s.values())).pnl) for s in series.values())
    pooled = {label: Daily.empty(first, last - first, 0.0) for label in labels}
    for by_label in series.values():
        for label in labels:
            pooled[label].add(by_label[label])
    return pooled


def baselines(chosen: Sequence[Configuration]) -> dict[str, str]:
    """{graduated label: the static label it is tested against}: static at the same
    grid point (`--set` values), so a promise compares policies, not sizes. Empty
    without a static or a graduated configuration."""
    static = {c.params: c.label for c in chosen if c.policy == FIXED}
    return {c.label: static[c.params] for c in chosen if c.policy == GRADUATED and c.params in static}


def report(runs: Sequence[MarketRun], chosen: list[Configuration], series: dict[str, dict[str, Daily]],
           settings: Settings) -> dict[str, Any]:
    labels = [c.label for c in chosen]
    pairs = baselines(chosen)
    fixed = next((c.label for c in chosen if c.policy == FIXED), None)
    graduated = [c.label for c in chosen if c.policy == GRADUATED]
    markets: dict[str, Any] = {}
    for run in runs:
        entry: dict[str, Any] = {"description": run.market.description, "bars": run.bars,
                                 "from": run.span[0], "to": run.span[1], "strategies": run.strategies}
        by_label = series.get(run.market.name)
        if by_label is None:
            entry["skipped"] = "no strategy could run on this history"
        else:
            entry["policies"] = {label: policy_figures(by_label[label]) for label in labels}
            entry["promises"] = {g: test_promises(by_label, settings, f, g) for g, f in pairs.items()}
        markets[run.market.name] = entry
    result: dict[str, Any] = {"settings": {"resamples": settings.resamples, "block_days": settings.block_days,
                                           "seed": settings.seed, "confidence": settings.confidence,
                                           "fixed": fixed, "graduated": graduated, "pairs": pairs},
                              "markets": markets}
    if series:
        pooled = _pooled(series, labels)
        result["pooled"] = {"markets": sorted(series),
                            "policies": {label: policy_figures(pooled[label]) for label in labels},
                            "promises": {g: test_promises(pooled, settings, f, g) for g, f in pairs.items()}}
    return result


# -- output -------------------------------------------------------------------------------------------------

def _fmt(value: Any, pct: bool) -> str:
    if value is None:
        return "-"
    return f"{value * 100:+.1f}%" if pct else f"{value:+.3f}"


def promise_rows(result: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], bool]]:
    """(market or "pooled", graduated configuration, promise row, whether it is the only
    graduated configuration) for every promise row of the report, markets first."""
    sections = [(name, m) for name, m in result["markets"].items() if "promises" in m]
    if "pooled" in result:
        sections.append(("pooled", result["pooled"]))
    for name, section in sections:
        for label, rows in section["promises"].items():
            for row in rows:
                yield name, label, row, len(section["promises"]) == 1


def table(result: dict[str, Any]) -> str:
    """The promise table: one row per market (and pooled) and promise."""
    out = [f"{'market':<8} {'promise':<22} {'fixed':>12} {'graduated':>12} {'measured':>9} "
           f"{'95% interval':>19} {'promised':>10}  verdict"]
    for name, label, row, alone in promise_rows(result):
        pct = row["promise"] != "sharpe"
        promised = f"{'+' if not pct else ''}{row['promised'][0] * (100 if pct else 1):g}" + ("%" if pct else "")
        low, high = row["interval"]
        interval = f"[{_fmt(low, pct)}, {_fmt(high, pct)}]"
        out.append(f"{name:<8} {row['promise']:<22} {_num(row['fixed']):>12} {_num(row['graduated']):>12} "
                   f"{_fmt(row['measured'], pct):>9} {interval:>19} {'>=' + promised:>10}  {row['verdict']}"
                   + ("" if alone else f"  ({label})"))
    missing = [name for name, given in ((FIXED, result["settings"]["fixed"]),
                                        (GRADUATED, result["settings"]["graduated"])) if not given]
    if missing:
        out.append(f"promises: not tested, no {' and no '.join(missing)} policy among --policy")
    skipped = [f"{m}/{s}: {info['skipped']}" for m, entry in result["markets"].items()
               for s, info in entry["strategies"].items() if "skipped" in info]
    skipped += [f"{m}: {entry['skipped']}" for m, entry in result["markets"].items() if "skipped" in entry]
    if skipped:
        out.append("skipped: " + "; ".join(skipped))
    return "\n".join(out)


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:,.4g}"


def as_csv(result: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["market", "graduated", "promise", "fixed_value", "graduated_value", "measured",
                     "interval_low", "interval_high", "promised_low", "promised_high", "defined", "verdict"])
    for name, label, row, _ in promise_rows(result):
        writer.writerow([name, label, row["promise"], row["fixed"], row["graduated"], row["measured"],
                         *row["interval"], *row["promised"], row["defined"], row["verdict"]])
    return buffer.getvalue()


def dumps(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=1, sort_keys=True) + "\n"
