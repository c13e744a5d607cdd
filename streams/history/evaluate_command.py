"""The `sizer evaluate` command: options, output files and plots around
`history.evaluate` (the figures and the promises)."""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from streams.errors import ConfigError
from streams.history import evaluate as ev
from streams.history import markets as mk
from streams.history.sweep import configurations, parse_grid, policy_config

MAX_RESAMPLES = 100_000  # about 2 minutes of bootstrap per market on the build machine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--market", action="append", default=None, metavar="NAME",
                        help=f"a market to evaluate (repeatable; default all: {', '.join(mk.MARKETS)})")
    parser.add_argument("--strategy", action="append", default=None, metavar="NAME",
                        help=f"a strategy to generate signals (repeatable; default all: {', '.join(mk.STRATEGIES)})")
    parser.add_argument("--policy", action="append", default=None, metavar="POLICY",
                        help="static, conviction, graduated or a TOML config (repeatable; default the three; "
                             "the promises need static and graduated)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=V1,V2",
                        help="a grid axis over every policy, as in sizer sweep")
    parser.add_argument("--resamples", type=int, default=ev.Settings.resamples, help="bootstrap resamples")
    parser.add_argument("--block-days", type=int, default=ev.Settings.block_days,
                        help="bootstrap block length in calendar days")
    parser.add_argument("--seed", type=int, default=ev.Settings.seed, help="bootstrap seed")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="write evaluate.json, evaluate.csv and the plots there")
    parser.add_argument("--journals", default=None, metavar="DIR",
                        help="also write each market's journal (and recording.toml) there, for sizer replay / sweep")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")


def _pick(given: Sequence[str] | None, known: dict[str, Any], option: str) -> list[Any]:
    if not given:
        return list(known.values())
    unknown = [name for name in given if name not in known]
    if unknown:
        raise ConfigError(f"{option}: unknown {unknown[0]!r}; known: {', '.join(known)}")
    return [known[name] for name in dict.fromkeys(given)]


def run_command(args: argparse.Namespace) -> int:
    """Exit 0 with the report; 2 for bad options (one line); 3 when a market's
    package, or matplotlib for `--out`'s plots, is missing (one line)."""
    started = time.perf_counter()
    markets = _pick(args.market, mk.MARKETS, "--market")
    strategies = _pick(args.strategy, mk.STRATEGIES, "--strategy")
    if not 10 <= args.resamples <= MAX_RESAMPLES or args.block_days < 1:
        raise ConfigError(f"--resamples: at least 10 and at most {MAX_RESAMPLES:,}; --block-days: at least 1")
    bases = [policy_config(spec) for spec in (args.policy or list(ev.POLICIES))]
    chosen = configurations(bases, parse_grid(args.set))
    if args.out:
        try:
            import matplotlib  # noqa: F401  (the plots; checked before the minute of work, not after)
        except ImportError as exc:
            print(f"sizer evaluate: --out: {exc.name or exc} is not installed, the plots need it "
                  f"(pip install -e '.[evaluate]')", file=sys.stderr)
            return 3
    runs = []
    for market in markets:
        try:
            runs.append(ev.build_market(market, strategies))
        except ImportError as exc:
            print(f"sizer evaluate: market {market.name}: {exc.name or exc} is not installed "
                  f"(pip install -e '.[evaluate]')", file=sys.stderr)
            return 3
    if args.journals:
        with _writing("--journals", args.journals):
            _write_journals(Path(args.journals), runs)
    settings = ev.Settings(args.resamples, args.block_days, args.seed)
    result, series = ev.evaluate(runs, chosen, settings)
    if args.out:
        out = Path(args.out)
        with _writing("--out", args.out):
            out.mkdir(parents=True, exist_ok=True)
            (out / "evaluate.json").write_text(ev.dumps(result))
            (out / "evaluate.csv").write_text(ev.as_csv(result))
            written = plot(result, series, out)
    print(ev.dumps(result) if args.json else ev.table(result))
    if args.out:
        print(f"\nwritten: {out / 'evaluate.json'}, {out / 'evaluate.csv'}, " + ", ".join(str(p) for p in written),
              file=sys.stderr)
    print(f"evaluated {len(runs)} market(s) x {len(strategies)} strategies x {len(chosen)} configuration(s) "
          f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


@contextmanager
def _writing(option: str, directory: str) -> Iterator[None]:
    """An output directory that cannot be written: ConfigError naming the option and the cause."""
    try:
        yield
    except OSError as exc:
        raise ConfigError(f"{option}: cannot write {directory}: {exc.strerror or exc}") from exc


def _write_journals(directory: Path, runs: Sequence[ev.MarketRun]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "recording.toml").write_text(mk.RECORDING_TOML)
    for run in runs:
        if run.lines:
            (directory / f"{run.market.name}.jsonl").write_text("\n".join(run.lines) + "\n")


def plot(result: dict[str, Any], series: dict[str, dict[str, ev.Daily]], out: Path) -> list[Path]:
    """equity.png and drawdown.png (one panel per market, a line per configuration) and
    promises.png (measured against promised, with the intervals)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import numpy as np
    from datetime import datetime, timezone

    written = []
    names = sorted(series)
    for kind in ("equity", "drawdown"):
        fig, axes = plt.subplots(len(names), 1, figsize=(11, 2.6 * max(1, len(names))), squeeze=False)
        for ax, name in zip(axes[:, 0], names):
            for label, daily in series[name].items():
                days = [datetime.fromtimestamp((daily.first_day + i) * ev.DAY_MS / 1000, tz=timezone.utc)
                        for i in range(len(daily.pnl))]
                equity = daily.start_equity + np.cumsum(daily.pnl)
                values = equity if kind == "equity" else \
                    np.maximum.accumulate(np.maximum(equity, daily.start_equity)) - equity
                ax.plot(days, values, label=label, linewidth=0.9)
            ax.set_title(f"{name}: {result['markets'][name]['description']}", fontsize=9)
            ax.set_ylabel("USD" if kind == "equity" else "drawdown, USD", fontsize=8)
            locator = mdates.AutoDateLocator()
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
            ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        path = out / f"{kind}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    rows = [(name, section) for name, section in result["markets"].items() if section.get("promises")]
    if "pooled" in result and result["pooled"]["promises"]:
        rows.append(("pooled", result["pooled"]))
    if rows:
        fig, axes = plt.subplots(1, len(ev.PROMISES), figsize=(3.2 * len(ev.PROMISES), 3.8), squeeze=False)
        for ax, promise in zip(axes[0], ev.PROMISES):
            for y, (name, section) in enumerate(rows):
                row = next(r for r in next(iter(section["promises"].values())) if r["promise"] == promise.name)
                low, high = row["interval"]
                if row["measured"] is not None:
                    err = [[row["measured"] - low if low is not None else 0],
                           [high - row["measured"] if high is not None else 0]]
                    ax.errorbar([row["measured"]], [y], xerr=err, fmt="o", capsize=3,
                                color={"held": "tab:green", "not held": "tab:red"}.get(row["verdict"], "tab:gray"))
            ax.axvspan(promise.low, max(promise.high, promise.low + 1e-9), color="tab:green", alpha=0.15)
            ax.axvline(0, color="black", linewidth=0.5)
            ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
            ax.set_title(promise.text, fontsize=8)
        fig.tight_layout()
        path = out / "promises.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
