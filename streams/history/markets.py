"""Real price history and classic strategies, turned into journals for `sizer evaluate`.

Markets are read where well-kept packages ship them (nothing is copied into the
repository): `arch` (Kevin Sheppard's ARCH toolbox: `arch.data.sp500`,
`arch.data.nasdaq`, daily OHLC 1999-2018; `arch.data.wti`, daily WTI crude
1986-2019) and `backtesting` (backtesting.py: `backtesting.test.GOOG` daily
2004-2013, `EURUSD` hourly 2017-2018, `BTCUSD` monthly 2012-2024).

Each strategy is a documented long-only rule over bars. An entry signal is
stamped just before the next bar opens, at the bar's close price, with the
strategy's own strength as its score in [0, 1]; the order is filled at the next
bar's open; the exit rule's signal closes the position at the open of the bar
after it (`position_closed` with its realized PnL). A position still open at the
end is closed at the last bar's close. The journal is recorded at a fixed
RECORDED_SIZE per signal with every cap out of the way (like `make sweep-demo`):
the sweep scales fills and closes to each policy's own sizes.

Prices come from the packages as binary floats: each is converted once, at this
edge, to a Decimal rounded to the market's tick (`Market.tick`); from there on
everything is Decimal, as on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Any, Callable, Iterator, Sequence

from streams.engine import order_id_for
from streams.wire import decimals

RECORDED_SIZE = Decimal(1000)
QTY_STEP = Decimal("0.0001")

# The configuration journals are recorded under: every signal at a fixed
# RECORDED_SIZE, caps far out of the way, signals never stale (bars can be a
# weekend or a month apart).
RECORDING_TOML = f"""preset = "conviction"
enabled = false
pair_max_usd = "{RECORDED_SIZE}"
pair_cap_usd = "1000000000"
portfolio_cap = "1000000000"
"""


@dataclass(frozen=True)
class Bars:
    """One market's bars, oldest first: open times (epoch ms, UTC) and Decimal OHLC."""

    name: str
    times: tuple[int, ...]
    open: tuple[Decimal, ...]
    high: tuple[Decimal, ...]
    low: tuple[Decimal, ...]
    close: tuple[Decimal, ...]

    def __len__(self) -> int:
        return len(self.times)

    def slice(self, start: int, stop: int) -> "Bars":
        """Bars[start:stop], for a short hand-checked piece of history."""
        return Bars(self.name, self.times[start:stop], self.open[start:stop], self.high[start:stop],
                    self.low[start:stop], self.close[start:stop])


@dataclass(frozen=True)
class Market:
    """Where a market's bars ship: package module, attribute, tick and description."""

    name: str
    source: str  # "arch.data.sp500" or "backtesting.test:GOOG"
    tick: Decimal
    description: str


MARKETS: dict[str, Market] = {m.name: m for m in (
    Market("sp500", "arch.data.sp500", Decimal("0.01"), "S&P 500 index, daily, 1999-2018 (arch)"),
    Market("nasdaq", "arch.data.nasdaq", Decimal("0.01"), "NASDAQ Composite, daily, 1999-2018 (arch)"),
    Market("wti", "arch.data.wti", Decimal("0.01"), "WTI crude oil spot, daily, 1986-2019 (arch)"),
    Market("goog", "backtesting.test:GOOG", Decimal("0.01"), "Alphabet (GOOG), daily, 2004-2013 (backtesting)"),
    Market("eurusd", "backtesting.test:EURUSD", Decimal("0.00001"), "EUR/USD, hourly, 2017-2018 (backtesting)"),
    Market("btcusd", "backtesting.test:BTCUSD", Decimal("0.01"), "BTC/USD, monthly, 2012-2024 (backtesting)"),
)}


def _price(value: float, tick: Decimal) -> Decimal:
    # repr gives the shortest decimal that round-trips the float: no binary noise
    return Decimal(repr(float(value))).quantize(tick, rounding=ROUND_HALF_EVEN)


def load(market: Market) -> Bars:
    """The market's bars from its package. A series with a close only (WTI) has
    open = high = low = close. Rows with a missing or non-positive price are dropped.
    Raises ImportError when the package is not installed."""
    import importlib

    module_name, _, attribute = market.source.partition(":")
    module = importlib.import_module(module_name)
    frame = getattr(module, attribute) if attribute else module.load()
    columns = {c.lower(): c for c in frame.columns}
    close_col = columns.get("close") or columns.get("adj close") or frame.columns[0]
    picked = {k: columns.get(k, close_col) for k in ("open", "high", "low")}
    times, o, h, l, c = [], [], [], [], []
    for stamp, row in frame.iterrows():
        values = [row[picked["open"]], row[picked["high"]], row[picked["low"]], row[close_col]]
        if any(v != v or v <= 0 for v in values):  # NaN or not a price
            continue
        when = stamp.to_pydatetime()
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        times.append(int(when.timestamp() * 1000))
        op, hi, lo, cl = (_price(v, market.tick) for v in values)
        o.append(op)
        h.append(max(hi, op, cl))
        l.append(min(lo, op, cl))
        c.append(cl)
    return Bars(market.name, tuple(times), tuple(o), tuple(h), tuple(l), tuple(c))


# -- indicators (Decimal, over closes) ---------------------------------------------------------------------

def sma(values: Sequence[Decimal], n: int, i: int) -> Decimal:
    """Simple moving average of values[i-n+1 .. i]."""
    return sum(values[i - n + 1:i + 1], Decimal(0)) / n


def efficiency_ratio(values: Sequence[Decimal], n: int, i: int) -> Decimal:
    """Kaufman's efficiency ratio over the last n bars (P. Kaufman, "Trading Systems
    and Methods", ch. on adaptive averages): |net change| / sum of |bar changes|, in
    [0, 1]; 1 is a straight trend. 0 when nothing moved."""
    path = sum((abs(values[k] - values[k - 1]) for k in range(i - n + 1, i + 1)), Decimal(0))
    return abs(values[i] - values[i - n]) / path if path else Decimal(0)


def rsi(values: Sequence[Decimal], n: int, i: int) -> Decimal:
    """Wilder's RSI with a simple average over n changes (Connors' RSI(2) uses n=2),
    in [0, 100]; 50 when nothing moved."""
    gains = sum((max(values[k] - values[k - 1], Decimal(0)) for k in range(i - n + 1, i + 1)), Decimal(0))
    losses = sum((max(values[k - 1] - values[k], Decimal(0)) for k in range(i - n + 1, i + 1)), Decimal(0))
    if gains + losses == 0:
        return Decimal(50)
    return 100 * gains / (gains + losses)


# -- strategies --------------------------------------------------------------------------------------------

# A rule over bars at i (after bar i closed): ("enter", score) when flat, ("exit", None) when long, or None.
Rule = Callable[[Bars, int, bool], tuple[str, Decimal | None] | None]


@dataclass(frozen=True)
class Strategy:
    """A classic rule: its name, the bars it needs before its first decision, the rule, the source."""

    name: str
    warmup: int
    rule: Rule
    source: str


def _sma_cross(bars: Bars, i: int, long: bool) -> tuple[str, Decimal | None] | None:
    """Variable-length moving-average rule, 10/50 (Brock, Lakonishok and LeBaron 1992,
    "Simple Technical Trading Rules and the Stochastic Properties of Stock Returns",
    J. Finance 47(5)): long while the 10-bar average is above the 50-bar one.
    Score: the 50-bar efficiency ratio at the cross."""
    fast, slow = sma(bars.close, 10, i), sma(bars.close, 50, i)
    fast_before, slow_before = sma(bars.close, 10, i - 1), sma(bars.close, 50, i - 1)
    if not long and fast > slow and fast_before <= slow_before:
        return "enter", efficiency_ratio(bars.close, 50, i)
    if long and fast < slow:
        return "exit", None
    return None


def _donchian(bars: Bars, i: int, long: bool) -> tuple[str, Decimal | None] | None:
    """Donchian channel breakout, the Turtles' System 1 (C. Faith, "Way of the
    Turtle", 2007; R. Donchian 1960): enter on a close above the prior 20-bar high,
    exit on a close below the prior 10-bar low. Score: the 20-bar efficiency ratio."""
    if not long and bars.close[i] > max(bars.high[i - 20:i]):
        return "enter", efficiency_ratio(bars.close, 20, i)
    if long and bars.close[i] < min(bars.low[i - 10:i]):
        return "exit", None
    return None


def _rsi2(bars: Bars, i: int, long: bool) -> tuple[str, Decimal | None] | None:
    """Connors' RSI(2) mean reversion (L. Connors and C. Alvarez, "Short Term Trading
    Strategies That Work", 2008): above the 200-bar average, buy when RSI(2) < 10,
    sell on a close above the 5-bar average. Score: (10 - RSI(2)) / 10, the deeper
    the pullback the stronger."""
    if not long:
        value = rsi(bars.close, 2, i)
        if value < 10 and bars.close[i] > sma(bars.close, 200, i):
            return "enter", (10 - value) / 10
        return None
    if bars.close[i] > sma(bars.close, 5, i):
        return "exit", None
    return None


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("sma_cross", 51, _sma_cross, "Brock, Lakonishok and LeBaron (1992)"),
    Strategy("donchian", 21, _donchian, "Faith (2007), Donchian (1960)"),
    Strategy("rsi2", 201, _rsi2, "Connors and Alvarez (2008)"),
)}


# -- journals ----------------------------------------------------------------------------------------------

def instrument(market: Market) -> dict[str, Any]:
    """The market as one spot leg, sized in base units to QTY_STEP."""
    return {"symbol": market.name.upper(), "legs": [{
        "venue_symbol": market.name.upper(), "side": "buy", "qty_step": str(QTY_STEP),
        "min_qty": str(QTY_STEP), "max_qty": None, "min_notional": "1"}]}


def _signal_time(bars: Bars, i: int) -> int:
    """Just before bar i+1 opens (or, for the last bar, one bar length after it opened)."""
    if i + 1 < len(bars):
        return bars.times[i + 1] - 1000
    return bars.times[i] + (bars.times[i] - bars.times[i - 1]) - 1000


def trades(bars: Bars, strategy: Strategy, portfolio: str, symbol: str) -> Iterator[tuple[int, int, str, dict]]:
    """(ts, sequence, topic, value) of one strategy over one market: signals, fills
    at the next open, closes at the open after the exit signal."""
    long = False
    entry: tuple[Decimal, Decimal] | None = None  # (qty, fill price)
    n = 0
    for i in range(strategy.warmup, len(bars) - 1):
        said = strategy.rule(bars, i, long)
        if said is None:
            continue
        action, score = said
        ts = _signal_time(bars, i)
        if action == "enter":
            n += 1
            signal_id = f"{portfolio}-s{n}"
            price = bars.close[i]
            qty = (RECORDED_SIZE / price).quantize(QTY_STEP, rounding=ROUND_DOWN)
            if qty <= 0:
                continue
            assert score is not None
            score = min(max(score, Decimal(0)), Decimal(1)).quantize(Decimal("0.0001"), rounding=ROUND_DOWN)
            yield ts, 0, "signals", {"signal_id": signal_id, "portfolio_id": portfolio, "symbol": symbol,
                                     "side": "buy", "score": decimals.canonical(score),
                                     "price": decimals.canonical(price), "ts": ts}
            fill_price = bars.open[i + 1]
            yield bars.times[i + 1], 1, "fills", {
                "event_id": f"{portfolio}-f{n}", "portfolio_id": portfolio, "ts": bars.times[i + 1],
                "type": "order_filled", "order_id": order_id_for(portfolio, signal_id), "symbol": symbol,
                "qty": decimals.canonical(qty), "price": decimals.canonical(fill_price), "final": True}
            long, entry = True, (qty, fill_price)
        else:
            assert entry is not None
            yield _close(portfolio, symbol, n, bars.times[i + 1], entry, bars.open[i + 1])
            long, entry = False, None
    if entry is not None:
        last = len(bars) - 1
        yield _close(portfolio, symbol, n, _signal_time(bars, last), entry, bars.close[last])


def _close(portfolio: str, symbol: str, n: int, ts: int, entry: tuple[Decimal, Decimal], price: Decimal
           ) -> tuple[int, int, str, dict]:
    qty, fill_price = entry
    return ts, 0, "fills", {
        "event_id": f"{portfolio}-c{n}", "portfolio_id": portfolio, "ts": ts, "type": "position_closed",
        "symbol": symbol, "qty": decimals.canonical(qty), "price": decimals.canonical(price),
        "realized_pnl": decimals.canonical(qty * (price - fill_price))}


def journal(bars: Bars, market: Market, strategies: Sequence[Strategy]) -> list[tuple[str, dict]]:
    """One market's journal: its instrument, then every strategy's events (one
    portfolio per strategy, named after it) in event-time order."""
    events: list[tuple[int, int, int, str, dict]] = []
    symbol = market.name.upper()
    for k, strategy in enumerate(strategies):
        for ts, rank, topic, value in trades(bars, strategy, strategy.name, symbol):
            events.append((ts, rank, k, topic, value))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    return [("instruments", instrument(market))] + [(topic, value) for _, _, _, topic, value in events]


def day_of(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")
