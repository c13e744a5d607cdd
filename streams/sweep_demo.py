"""`make sweep-demo`: a generated trading history swept over the three policies
and a small grid of the graduated design's drawdown protection.

The history is what a paper-trading record looks like: every signal taken at a
fixed $1,000 (the recording configuration below, no cap in the way), filled a
few seconds later at the signal's price, and closed 12 minutes later. The edge
is known: a close wins with probability 0.40 + 0.35 x score (0.5 at score 0.29,
0.75 at score 1), winning or losing 0.8% of the notional (with noise); from 40%
to 55% of the way through, a losing stretch lowers it to 0.30 for every score.
Signals come every 5 minutes per portfolio, rotating over three instruments,
so a symbol never holds two positions of one portfolio at once.
"""

from __future__ import annotations

import argparse
import random
import sys
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any, Iterator

from streams.wire import decimals

from streams.wire import journal
from streams.demo_session import INSTRUMENTS
from streams.engine import order_id_for
from streams.kafka.settings import PROJECT_ROOT

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
PRICES = {"BTC-PERP-BASIS": Decimal(50_000), "ETH-USD": Decimal(2_500), "SOL-USD": Decimal(150)}
STEPS = {"BTC-PERP-BASIS": Decimal("0.001"), "ETH-USD": Decimal("0.001"), "SOL-USD": Decimal("0.01")}
SIGNAL_EVERY_MS = 5 * 60_000
HOLD_MS = 12 * 60_000
LOSING_STRETCH = (0.40, 0.55)
RECORDED_SIZE = Decimal(1000)


# The configuration the history is recorded under: every known, fresh signal at a
# fixed $1,000, with caps far out of the way.
RECORDING_TOML = f"""preset = "conviction"
enabled = false
pair_max_usd = "{RECORDED_SIZE}"
pair_cap_usd = "1000000000"
portfolio_cap = "1000000000"
"""


def win_probability(score: float, progress: float) -> float:
    if LOSING_STRETCH[0] <= progress < LOSING_STRETCH[1]:
        return 0.30
    return 0.40 + 0.35 * score


def history(signals_per_portfolio: int = 2000, portfolios: int = 2, seed: int = 18) -> Iterator[tuple[str, Any]]:
    """(topic, value) pairs in event-time order: instruments, then signals, fills and closes."""
    rng = random.Random(seed)
    for instrument in INSTRUMENTS:
        yield "instruments", instrument
    symbols = list(PRICES)
    prices = dict(PRICES)
    pending: list[tuple[int, int, tuple[str, Any]]] = []  # (ts, sequence, entry) not yet emitted
    sequence = 0
    for n in range(signals_per_portfolio):
        progress = n / signals_per_portfolio
        for p in range(portfolios):
            portfolio = f"p{p + 1}"
            ts = T0 + n * SIGNAL_EVERY_MS + p * 7_000
            while pending and pending[0][0] <= ts:
                yield pending.pop(0)[2]
            symbol = symbols[(n + p) % len(symbols)]
            prices[symbol] = (prices[symbol] * Decimal(1 + rng.gauss(0, 0.004))).quantize(Decimal("0.01"))
            price = prices[symbol]
            score = rng.uniform(0.3, 1.0)
            signal_id = f"{portfolio}-s{n}"
            yield "signals", {"signal_id": signal_id, "portfolio_id": portfolio, "symbol": symbol,
                              "side": rng.choice(("buy", "sell")), "score": f"{score:.3f}",
                              "price": decimals.canonical(price), "ts": ts}
            qty = (RECORDED_SIZE / price).quantize(STEPS[symbol], rounding=ROUND_DOWN)
            won = rng.random() < win_probability(round(score, 3), progress)
            move = Decimal(str(round(abs(rng.gauss(0.008, 0.002)), 5))) * (1 if won else -1)
            pnl = (qty * price * move).quantize(Decimal("0.01"))
            exit_price = (price * (1 + move)).quantize(Decimal("0.01"))
            sequence += 1
            fill = {"event_id": f"{portfolio}-f{n}", "portfolio_id": portfolio, "ts": ts + 3_000,
                    "type": "order_filled", "order_id": order_id_for(portfolio, signal_id), "symbol": symbol,
                    "qty": decimals.canonical(qty), "price": decimals.canonical(price), "final": True}
            close = {"event_id": f"{portfolio}-c{n}", "portfolio_id": portfolio, "ts": ts + HOLD_MS,
                     "type": "position_closed", "symbol": symbol, "qty": decimals.canonical(qty),
                     "price": decimals.canonical(exit_price), "realized_pnl": decimals.canonical(pnl)}
            pending += [(ts + 3_000, sequence, ("fills", fill)), (ts + HOLD_MS, sequence, ("fills", close))]
            pending.sort(key=lambda item: (item[0], item[1]))
    for _, _, entry in pending:
        yield entry


def write_history(path: Path, signals_per_portfolio: int, portfolios: int, seed: int = 18) -> int:
    lines = [journal.line(topic, value) for topic, value in history(signals_per_portfolio, portfolios, seed)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def main(argv: list[str] | None = None) -> int:
    from streams import cli

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(PROJECT_ROOT / ".sizer-data" / "sweep-demo"))
    parser.add_argument("--signals", type=int, default=2000, help="signals per portfolio")
    parser.add_argument("--portfolios", type=int, default=2)
    args = parser.parse_args(argv)
    out = Path(args.out)
    recorded = out / "recording.toml"
    out.mkdir(parents=True, exist_ok=True)
    recorded.write_text(RECORDING_TOML)
    path = out / "history.jsonl"
    lines = write_history(path, args.signals, args.portfolios)
    print(f"history: {path} ({lines:,} lines: {args.signals * args.portfolios:,} signals, fills and closes; "
          f"recorded under {recorded})\n", flush=True)
    print("== the three policies side by side", flush=True)
    code = cli.main(["sweep", "--journal", str(path), "--recorded", str(recorded), "--policy", "static",
                     "--policy", "conviction", "--policy", "graduated", "--rank", "max_drawdown_pct",
                     "--plot", str(out / "policies"), "--csv", str(out / "policies.csv")])
    sys.stdout.flush()
    print("\n== graduated: how much to cut in drawdown, and after how many losses", flush=True)
    return code or cli.main(["sweep", "--journal", str(path), "--recorded", str(recorded), "--policy", "graduated",
                             "--set", "drawdown_cut=0.25,0.5,1", "--set", "loss_streak=2,3,4",
                             "--rank", "max_drawdown_pct", "--plot", str(out / "grid")])


if __name__ == "__main__":
    sys.exit(main())
