"""The figures of one configuration's run: exposure, equity, PnL, Sharpe, the
rejections; and the curves the plots draw.
"""

from __future__ import annotations

import time
from collections import Counter
from decimal import Context, Decimal, ROUND_HALF_EVEN, localcontext
from typing import Any


from streams.config import SizingConfig
from streams.wire import decimals
from streams.wire.decimals import ZERO

from streams.history.sweep.events import History
from streams.history.sweep.simulation import Run


STATS = Context(prec=34, rounding=ROUND_HALF_EVEN)
CENT = Decimal("0.01")
RATIO = Decimal("0.0001")


def _q(value: Decimal | None, quantum: Decimal) -> str | None:
    return None if value is None else decimals.canonical(value.quantize(quantum, rounding=ROUND_HALF_EVEN))


def metrics(history: History, config: SizingConfig, run: Run) -> dict[str, Any]:
    """The figures of one configuration, as JSON data (Decimals as canonical strings).

    - exposure: the sum over portfolios of positions + reservations after every
      input, ordered by event time; `peak_exposure` its maximum, `mean_exposure`
      its event-time-weighted mean over the history's span (the plain mean of the
      samples when the span is zero); `peak_vs_cap_pct` the highest exposure of
      any one portfolio as a % of its cap then, `mean_vs_cap_pct` the time-weighted
      exposure as a % of the time-weighted sum of caps.
    - equity: the sum of every portfolio's equity (starting equity + scaled
      realized PnL) after each close, by event time; `max_drawdown` the largest
      fall from a running peak, `max_drawdown_pct` that fall as a % of the peak
      it fell from; `recovery_s` the event time from that drawdown's trough to the
      first close back at or above the peak (null: not recovered by the end).
    - `sharpe`: mean / sample standard deviation of per-close returns (a close's
      PnL over its portfolio's equity before it), not annualised; null with fewer
      than two closes or no dispersion. Decimal square root: no float anywhere.
    - `pnl_per_exposure`: total PnL per dollar of mean exposure;
      `drawdown_per_exposure`: the max drawdown per dollar of mean exposure, a
      drawdown comparable between policies that trade at different sizes.
    """
    with localcontext(STATS):
        exposure = _exposure_figures(run.exposure, len(history.portfolios))
        equity = _equity_figures(run.closes, _starting_equity(history, config),
                                 run.exposure[0][0] if run.exposure else 0)
        pnl = sum((pnl for _, _, _, pnl, _ in run.closes), ZERO)
        mean_exposure = exposure["mean"]
        per_exposure = pnl / mean_exposure if mean_exposure else None
        drawdown_per_exposure = equity["drawdown"] / mean_exposure if mean_exposure else None
    return {
        "accepted": run.accepted,
        "accepted_notional": decimals.canonical(run.notional),
        "rejected": dict(sorted(run.rejected.items())),
        "unfilled": run.unfilled,
        "closes": len(run.closes),
        "pnl": decimals.canonical(pnl),
        "max_drawdown": decimals.canonical(equity["drawdown"]),
        "max_drawdown_pct": _q(equity["drawdown_pct"], RATIO),
        "recovery_s": None if equity["recovery_ms"] is None else decimals.canonical(
            Decimal(equity["recovery_ms"]) / 1000),
        "sharpe": _q(equity["sharpe"], RATIO),
        "peak_exposure": decimals.canonical(exposure["peak"]),
        "mean_exposure": _q(mean_exposure, CENT),
        "peak_vs_cap_pct": _q(exposure["peak_vs_cap"], RATIO),
        "mean_vs_cap_pct": _q(exposure["mean_vs_cap"], RATIO),
        "pnl_per_exposure": _q(per_exposure, RATIO),
        "drawdown_per_exposure": _q(drawdown_per_exposure, RATIO),
        "decisions_changed": run.changed,
        "final_phases": {str(phase): n for phase, n in sorted(Counter(run.phases.values()).items())},
    }


def _exposure_figures(samples: list[tuple[int, int, int, Decimal, Decimal]], portfolios: int) -> dict[str, Any]:
    ordered = samples  # sorted by `simulate`
    exposure = [ZERO] * portfolios
    cap = [ZERO] * portfolios
    total_exposure = total_cap = ZERO
    weighted_exposure = weighted_cap = ZERO
    peak = ZERO
    peak_at: tuple[Decimal, Decimal] | None = None  # (exposure, cap) at the highest exposure / cap
    summed = ZERO  # the total after every sample: its plain mean when no event time passes
    last_ts: int | None = None
    for ts, _, p, after, cap_now in ordered:
        if last_ts is None:
            last_ts = ts
        elif ts > last_ts:
            weighted_exposure += total_exposure * (ts - last_ts)
            weighted_cap += total_cap * (ts - last_ts)
            last_ts = ts
        total_exposure += after - exposure[p]
        exposure[p] = after
        was = cap[p]
        if cap_now is not was:  # a USD cap is one Decimal throughout: nothing to add
            total_cap += cap_now - was
            cap[p] = cap_now
        if total_exposure > peak:
            peak = total_exposure
        summed += total_exposure
        if cap_now > 0:
            # the highest exposure / cap, compared without dividing; under one cap, by exposure alone
            if peak_at is None:
                peak_at = (after, cap_now)
            elif cap_now is peak_at[1]:
                if after > peak_at[0]:
                    peak_at = (after, cap_now)
            elif after * peak_at[1] > peak_at[0] * cap_now:
                peak_at = (after, cap_now)
    span = ordered[-1][0] - ordered[0][0] if ordered else 0
    # no event time passed: every sample (of the total over portfolios) weighs the same
    mean = weighted_exposure / span if span else (summed / len(ordered) if ordered else ZERO)
    mean_vs_cap = weighted_exposure * 100 / weighted_cap if weighted_cap else None
    peak_vs_cap = None if peak_at is None else peak_at[0] * 100 / peak_at[1]
    return {"peak": peak, "mean": mean, "peak_vs_cap": peak_vs_cap, "mean_vs_cap": mean_vs_cap}


def _equity_figures(closes: list[tuple[int, int, int, Decimal, Decimal]], start_equity: Decimal,
                    start_ts: int) -> dict[str, Any]:
    ordered = closes  # sorted by `simulate`
    equity = peak = start_equity
    worst = ZERO
    worst_peak = trough_at = None
    curve: list[tuple[int, Decimal]] = []
    for i, (ts, _, _, pnl, _) in enumerate(ordered):
        equity += pnl
        curve.append((ts, equity))
        if equity > peak:
            peak = equity
        elif peak - equity > worst:
            worst, worst_peak, trough_at = peak - equity, peak, i
    recovery_ms = None
    if trough_at is not None:
        trough_ts = curve[trough_at][0]
        recovery_ms = next((ts - trough_ts for ts, value in curve[trough_at + 1:] if value >= worst_peak), None)
    returns = [pnl / before for _, _, _, pnl, before in closes if before]
    sharpe = None
    if len(returns) >= 2:
        mean = sum(returns, ZERO) / len(returns)
        variance = sum(((r - mean) ** 2 for r in returns), ZERO) / (len(returns) - 1)
        if variance > 0:
            sharpe = mean / variance.sqrt()
    return {"drawdown": worst, "drawdown_pct": worst * 100 / worst_peak if worst_peak else ZERO,
            "recovery_ms": recovery_ms, "sharpe": sharpe, "curve": curve, "start": (start_ts, start_equity)}


def curves(history: History, config: SizingConfig, run: Run, points: int = 1500, most: int = 3) -> dict[str, Any]:
    """Equity and exposure (with the sum of caps) over event time, thinned to about
    `points` each, as floats: for plotting only. `use` is each portfolio's exposure
    as a percentage of its own cap: the `most` portfolios that came nearest their
    cap (by peak use) one curve each, by portfolio id, and the others as one curve
    of their total exposure over their total cap (`rest`, with how many they are)."""
    with localcontext(STATS):
        equity = _equity_figures(run.closes, _starting_equity(history, config),
                                 run.exposure[0][0] if run.exposure else 0)
    equity_curve = [equity["start"], *equity["curve"]]
    exposure_curve: list[tuple[int, Decimal, Decimal]] = []
    ordered = run.exposure
    per_exposure = [ZERO] * len(history.portfolios)
    per_cap = [ZERO] * len(history.portfolios)
    total_e = total_c = ZERO
    for ts, _, p, after, cap in ordered:
        total_e += after - per_exposure[p]
        total_c += cap - per_cap[p]
        per_exposure[p], per_cap[p] = after, cap
        exposure_curve.append((ts, total_e, total_c))

    def thin(items: list[Any]) -> list[Any]:
        step = max(1, len(items) // points)
        kept = items[::step]
        if items and kept[-1] is not items[-1]:
            kept.append(items[-1])
        return kept

    return {"equity": [(ts, float(v)) for ts, v in thin(equity_curve)],
            "exposure": [(ts, float(e), float(c)) for ts, e, c in thin(exposure_curve)],
            "use": _use(history, ordered, most, thin)}


def _use(history: History, ordered: list[tuple[int, int, int, Decimal, Decimal]], most: int,
         thin: Any) -> dict[str, Any]:
    """Exposure / own cap (%) per portfolio for the `most` nearest their cap, the rest summed."""
    peak_use: dict[int, float] = {}
    for _, _, p, after, cap in ordered:
        if cap > 0:
            use = float(after / cap) * 100
            if use > peak_use.get(p, -1.0):
                peak_use[p] = use
    top = sorted(peak_use, key=lambda p: (-peak_use[p], history.portfolios[p]))[:most]
    shown = set(top)
    per: dict[int, list[tuple[int, float]]] = {p: [] for p in top}
    rest: list[tuple[int, float]] = []
    rest_exposure: dict[int, Decimal] = {}
    rest_cap: dict[int, Decimal] = {}
    total_e = total_c = ZERO
    for ts, _, p, after, cap in ordered:
        if p in shown:
            if cap > 0:
                per[p].append((ts, float(after / cap) * 100))
            continue
        total_e += after - rest_exposure.get(p, ZERO)
        total_c += cap - rest_cap.get(p, ZERO)
        rest_exposure[p], rest_cap[p] = after, cap
        if total_c > 0:
            rest.append((ts, float(total_e / total_c) * 100))
    others = len(history.portfolios) - len(top)
    return {"portfolios": {history.portfolios[p]: thin(per[p]) for p in top},
            "rest": thin(rest) if others else [], "others": others}



def _starting_equity(history: History, config: SizingConfig) -> Decimal:
    """Every portfolio's starting equity together (each its own, under portfolio tables)."""
    if not config.portfolios:
        return config.starting_equity * len(history.portfolios)
    return sum((config.for_portfolio(p).starting_equity for p in history.portfolios), ZERO)
