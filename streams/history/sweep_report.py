"""`sizer sweep` as a command: configurations from the arguments, the history from
a journal or Kafka, and the results as a ranked table, JSON, CSV and plots."""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from decimal import Decimal
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from streams.wire import decimals
from streams.config import SizingConfig, load_config
from streams.errors import ConfigError
from streams.history.progress import Progress
from streams.history.sweep import Configuration, History, Outcome, configurations, from_journal, from_kafka, parse_grid, \
    policy_config, sweep
from streams.text import counted

# rank column -> True when higher is better
RANKS: dict[str, bool] = {
    "pnl": True, "sharpe": True, "pnl_per_exposure": True, "accepted": True, "accepted_notional": True,
    "mean_exposure": True, "max_drawdown": False, "max_drawdown_pct": False, "recovery_s": False,
    "peak_exposure": False, "peak_vs_cap_pct": False, "drawdown_per_exposure": False,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sweep's own options (the CLI adds --preset/--config and --bootstrap)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--journal", metavar="FILE", help="JSON Lines journal (decided under --recorded)")
    source.add_argument("--from-kafka", action="store_true",
                        help="topic history in its recorded interleaving, with the recorded decisions")
    parser.add_argument("--policy", action="append", default=[], metavar="NAME|FILE",
                        help="static (sizing disabled), conviction, graduated, or a TOML config file; repeat to "
                             "compare side by side (default: --preset/--config)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=V1,V2",
                        help="a grid axis: every policy at every combination of the values; repeat for more axes")
    parser.add_argument("--recorded", metavar="NAME|FILE",
                        help="--journal: the configuration its fills were recorded under (default: --preset/--config)")
    parser.add_argument("--rank", default="pnl", choices=sorted(RANKS),
                        help="order the table by this column (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="the results as JSON on stdout instead of the table")
    parser.add_argument("--csv", metavar="FILE", help="also write one CSV row per configuration")
    parser.add_argument("--plot", metavar="DIR", help="write equity.png, exposure.png (and heatmap.png for a 2-axis grid)")
    parser.add_argument("--workers", type=int, metavar="N", help="worker processes (default: one per core)")


def run_command(args: argparse.Namespace, kafka: Any = None) -> int:
    """`sizer sweep`; `kafka` is (settings, topics) for --from-kafka."""
    started = time.perf_counter()
    base = load_config(preset=args.preset, config_file=args.config)
    base_name = Path(args.config).stem if args.config else base.preset
    bases = [policy_config(spec) for spec in args.policy] or [(base_name, base)]
    grid = parse_grid(args.set)
    chosen = configurations(bases, grid)
    if args.workers is not None and args.workers < 1:
        raise ConfigError("--workers: must be at least 1")
    if args.plot:
        try:  # before the sweep: an unusable directory must not cost a whole run
            Path(args.plot).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--plot: cannot write to {args.plot}: {exc.strerror}") from exc
    progress = Progress(unit="configurations", every=1)
    history = _history(args, base, kafka, progress)
    if not history.signals:
        where = f"--journal: {args.journal}" if not args.from_kafka else "--from-kafka: the topic history"
        raise ConfigError(f"{where} holds no signal to sweep ({history.bad_lines} bad lines)")
    read_s = time.perf_counter() - started
    outcomes = sweep(history, chosen, args.workers,
                     lambda done, total: progress.note(f"{done}/{counted(total, 'configuration')} swept"),
                     with_curves=bool(args.plot))
    progress.close()
    total_s = time.perf_counter() - started
    report = as_json(history, outcomes, args.rank, [name for name, _ in grid])
    print(decimals.dumps(report) if args.json else table(report))
    if args.csv:
        try:
            Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
            Path(args.csv).write_text(as_csv(report, [name for name, _ in grid]))
        except OSError as exc:
            raise ConfigError(f"--csv: cannot write {args.csv}: {exc.strerror}") from exc
    if args.plot:
        try:
            written = plot(report, outcomes, Path(args.plot), [name for name, _ in grid], args.rank)
        except OSError as exc:
            raise ConfigError(f"--plot: cannot write to {args.plot}: {exc.strerror}") from exc
        for path in written:
            print(f"plot: {path}", file=sys.stderr)
    workers = max(1, min(args.workers or _cores(), len(chosen)))
    runs = sum(outcome.shares_run_of is None for outcome in outcomes)
    shared = len(chosen) - runs
    sharing = (f": the other {shared} {'differs' if shared == 1 else 'differ'} from one only in settings its run "
               "never read") if shared else ""
    print(f"sweep: {counted(history.signals, 'signal', spec=',')} x {counted(len(chosen), 'configuration')} in "
          f"{total_s:.1f} s wall (history {read_s:.1f} s, configurations {total_s - read_s:.1f} s on "
          f"{counted(workers, 'process', 'processes')}, {counted(runs, 'run')}{sharing}): "
          f"{history.signals * len(chosen) / max(total_s, 1e-9):,.0f} signal decisions/s", file=sys.stderr)
    return 0


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def _history(args: argparse.Namespace, base: SizingConfig, kafka: Any, progress: Progress) -> History:
    import gc

    # Hundreds of thousands of long-lived objects in a row: the cyclic collector would
    # walk them again and again while they are built, and find nothing.
    gc.disable()
    try:
        return _read_history(args, base, kafka, progress)
    finally:
        gc.enable()


def _read_history(args: argparse.Namespace, base: SizingConfig, kafka: Any, progress: Progress) -> History:
    if args.from_kafka:
        import asyncio

        from streams.history.audit import read_history, settle
        from streams.kafka.topics import apply

        settings, topics = kafka
        client = settings.for_role("sweep")
        asyncio.run(apply(client, topics, create=False))
        records = settle(asyncio.run(read_history(client, topics, progress)))
        return from_kafka(records, base)
    recorded = policy_config(args.recorded, "--recorded")[1] if args.recorded else base
    try:
        handle = open(args.journal, "rb")
    except OSError as exc:
        raise ConfigError(f"--journal: cannot read {args.journal}: {exc.strerror}") from exc
    with handle:
        return from_journal(handle, recorded, lambda n, r: print(f"{args.journal}:{n}: {r}", file=sys.stderr),
                            args.workers or _cores())


def _key(rank: str, row: dict[str, Any]) -> tuple[int, Decimal]:
    value = row[rank]
    if value is None:
        return 1, Decimal(0)
    number = Decimal(value)
    return 0, -number if RANKS[rank] else number


def as_json(history: History, outcomes: Sequence[Outcome], rank: str, axes: Sequence[str]) -> dict[str, Any]:
    """The sweep's report: the history's size and every configuration's figures,
    ranked. Deterministic: the same sweep gives the same bytes."""
    rows = []
    for order, outcome in enumerate(outcomes):
        c = outcome.configuration
        row: dict[str, Any] = {"label": c.label, "policy": c.policy, "params": dict(c.params),
                               "config_hash": c.config.config_hash, **outcome.metrics}
        if history.source == "kafka":
            row["recorded_decisions"] = {"compared": outcome.compared, "identical": outcome.identical}
        row["first_changes"] = outcome.first_changes[:5]
        rows.append((order, row))
    rows.sort(key=lambda item: (*_key(rank, item[1]), item[0]))
    return {
        "source": history.source,
        "history": {"signals": history.signals, "fills": history.fills, "closes": history.closes,
                    "portfolios": len(history.portfolios), "bad_lines": history.bad_lines,
                    "recorded_config_hashes": sorted(history.recorded_hashes)},
        "rank": rank, "axes": list(axes),
        "configurations": [{"rank": n, **row} for n, (_, row) in enumerate(rows, start=1)],
    }


COLUMNS = (("#", 2, "rank"), ("configuration", 0, "label"), ("accepted", 8, "accepted"),
           ("notional", 11, "accepted_notional"), ("rejected", 8, None), ("peak/cap%", 9, "peak_vs_cap_pct"),
           ("mean exp", 9, "mean_exposure"), ("pnl", 10, "pnl"), ("max dd", 9, "max_drawdown"),
           ("dd %", 6, "max_drawdown_pct"), ("sharpe", 7, "sharpe"), ("recovery", 8, "recovery_s"),
           ("pnl/exp", 7, "pnl_per_exposure"), ("dd/exp", 6, "drawdown_per_exposure"))


def _cell(key: str | None, row: dict[str, Any]) -> str:
    if key is None:
        return str(sum(row["rejected"].values()))
    value = row[key]
    if value is None:
        return "-"
    if key == "recovery_s":
        seconds = Decimal(value)
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size:
                return f"{decimals.canonical((seconds / size).quantize(Decimal('0.1')))} {unit}"
        return f"{value} s"
    if key in ("accepted_notional", "pnl", "max_drawdown", "mean_exposure"):
        return f"{Decimal(value).quantize(Decimal('0.01')):,}"
    if key in ("max_drawdown_pct", "peak_vs_cap_pct"):
        return str(Decimal(value).quantize(Decimal("0.01")))
    if key in ("sharpe", "pnl_per_exposure", "drawdown_per_exposure"):
        return str(Decimal(value).quantize(Decimal("0.001")))
    return str(value)


def table(report: dict[str, Any]) -> str:
    """The ranked terminal table, then each configuration's rejections by reason."""
    rows = report["configurations"]
    width = max([len("configuration"), *(len(r["label"]) for r in rows)])
    columns = [(name, w or width, key) for name, w, key in COLUMNS]
    cells = [[_cell(key, row) for _, _, key in columns] for row in rows]
    widths = [max(w, *(len(c[i]) for c in cells)) if cells else w for i, (_, w, _) in enumerate(columns)]
    history = report["history"]
    lines = [f"sweep over {report['source']} history: {counted(history['signals'], 'signal', spec=',')}, "
             f"{counted(history['fills'], 'fill', spec=',')} ({counted(history['closes'], 'close', spec=',')}), "
             f"{counted(history['portfolios'], 'portfolio')}; ranked by {report['rank']}"]
    head = "  ".join(name.ljust(w) if i == 1 else name.rjust(w) for i, ((name, _, _), w) in
                     enumerate(zip(columns, widths)))
    lines += [head, "-" * len(head)]
    for row in cells:
        lines.append("  ".join(c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    lines.append("rejections:")
    for row in rows:
        reasons = ", ".join(f"{reason} {n}" for reason, n in row["rejected"].items()) or "none"
        extra = f"; unfilled {row['unfilled']}" if row["unfilled"] else ""
        lines.append(f"  {row['label']}: {reasons}{extra}")
    if report["source"] == "kafka":
        for row in rows:
            compared = row["recorded_decisions"]["compared"]
            if compared:
                identical = row["recorded_decisions"]["identical"]
                lines.append(f"  {row['label']} is the recorded configuration: "
                             f"{identical} of {counted(compared, 'decision')} identical to the record")
    return "\n".join(lines)


def as_csv(report: dict[str, Any], axes: Sequence[str]) -> str:
    """One row per configuration, in rank order. `rejected` is the count of rejected
    signals, as in the table (0 when none); then one `rejected REASON` column per
    reason any configuration gave, each a count (0 where that configuration gave none)."""
    figures = ["config_hash", "accepted", "accepted_notional", "rejected", "unfilled", "closes", "pnl",
               "max_drawdown", "max_drawdown_pct", "recovery_s", "sharpe", "peak_exposure", "mean_exposure",
               "peak_vs_cap_pct", "mean_vs_cap_pct", "pnl_per_exposure", "drawdown_per_exposure", "decisions_changed"]
    leading = ["rank", "label", "policy"]
    # an axis named like a figure (the setting max_drawdown_pct) gets a column of its own
    axis_columns = [f"set {axis}" if axis in figures or axis in leading else axis for axis in axes]
    reasons = sorted({reason for row in report["configurations"] for reason in row["rejected"]})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*leading, *axis_columns, *figures, *(f"rejected {reason}" for reason in reasons)])
    for row in report["configurations"]:
        values = {**row, "rejected": sum(row["rejected"].values())}
        cells = [*(values.get(f) for f in leading), *(row["params"].get(axis) for axis in axes),
                 *(values.get(f) for f in figures), *(row["rejected"].get(reason, 0) for reason in reasons)]
        writer.writerow(["" if value is None else value for value in cells])
    return out.getvalue()


def plot(report: dict[str, Any], outcomes: Sequence[Outcome], directory: Path, axes: Sequence[str],
         rank: str) -> list[Path]:
    """equity.png (every configuration's equity on one chart), exposure.png (each
    configuration's exposure against its cap) and, for a grid of two axes,
    heatmap.png (the rank column over the grid, one panel per policy). Floats here
    only: these are pictures."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - the plot extra is optional
        raise ConfigError("--plot needs matplotlib: pip install 'streams-sizer[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written = [_equity_plot(plt, outcomes, directory / "equity.png"),
               _exposure_plot(plt, outcomes, directory / "exposure.png")]
    if len(axes) == 2:
        written.append(_heatmap(plt, report, directory / "heatmap.png", axes, rank))
    return written


def _when(ts: int) -> datetime:
    return datetime.fromtimestamp(ts / 1000, tz=timezone.utc)


def _equity_plot(plt: Any, outcomes: Sequence[Outcome], path: Path) -> Path:
    import matplotlib.dates as mdates

    figure, axis = plt.subplots(figsize=(11, 5.5))
    for outcome in outcomes:
        points = outcome.curves["equity"]
        axis.step([_when(t) for t, _ in points], [v for _, v in points], where="post",
                  label=outcome.configuration.label, linewidth=1.2)
    axis.set_title("equity (starting equity + PnL scaled to each configuration's sizes)")
    axis.set_ylabel("USD")
    _time_axis(axis, mdates)
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small", ncol=2 if len(outcomes) > 6 else 1)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _exposure_plot(plt: Any, outcomes: Sequence[Outcome], path: Path) -> Path:
    import matplotlib.dates as mdates

    columns = 3 if len(outcomes) > 4 else max(1, len(outcomes))
    rows = -(-len(outcomes) // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.2 * rows), squeeze=False, sharex=True,
                                sharey=True)
    # one colour per portfolio across every panel
    named = list(dict.fromkeys(p for outcome in outcomes for p in outcome.curves["use"]["portfolios"]))
    palette = [colour for i, colour in enumerate(plt.get_cmap("tab10").colors) if i != 7]  # grey: the others
    colours = {p: palette[i % len(palette)] for i, p in enumerate(named)}
    for axis, outcome in zip(grid.flat, outcomes):
        use = outcome.curves["use"]
        if use["rest"]:
            axis.step([_when(t) for t, _ in use["rest"]], [u for _, u in use["rest"]], where="post", linewidth=0.8,
                      color="grey", alpha=0.8, label=f"the other {use['others']} (total / their caps)")
        for portfolio, points in use["portfolios"].items():
            axis.step([_when(t) for t, _ in points], [u for _, u in points], where="post", linewidth=0.8,
                      alpha=0.85, color=colours[portfolio], label=portfolio)
        axis.axhline(100, color="black", linewidth=1.2, alpha=0.7)
        axis.set_title(outcome.configuration.label, fontsize="small")
        axis.set_ylim(bottom=0)
        axis.tick_params(labelsize="x-small")
        _time_axis(axis, mdates)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="xx-small", loc="upper left", framealpha=0.9)
    for axis in list(grid.flat)[len(outcomes):]:
        axis.set_visible(False)
    for axis in grid[:, 0]:
        axis.set_ylabel("% of its own cap", fontsize="small")
    figure.suptitle("exposure of each portfolio against its own cap (100% = the cap): the portfolios that came "
                    "nearest their cap, the others summed", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _time_axis(axis: Any, mdates: Any) -> None:
    """Event time (UTC) labelled as a reader wants it at any span: matplotlib's
    concise formatter shows the time of day over hours, the day over weeks, and
    the date once at the axis' offset instead of on every tick."""
    locator = mdates.AutoDateLocator(minticks=3, maxticks=7)
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _heatmap(plt: Any, report: dict[str, Any], path: Path, axes: Sequence[str], rank: str) -> Path:
    rows_of = report["configurations"]
    policies = list(dict.fromkeys(r["policy"] for r in rows_of))
    first = list(dict.fromkeys(r["params"][axes[0]] for r in rows_of))
    second = list(dict.fromkeys(r["params"][axes[1]] for r in rows_of))
    figure, panels = plt.subplots(1, len(policies), figsize=(1.6 + 1.4 * len(second) * len(policies),
                                                              1.4 + 0.7 * len(first)), squeeze=False)
    for axis, policy in zip(panels[0], policies):
        values = [[None] * len(second) for _ in first]
        for row in rows_of:
            if row["policy"] == policy and row[rank] is not None:
                values[first.index(row["params"][axes[0]])][second.index(row["params"][axes[1]])] = float(row[rank])
        shown = [[float("nan") if v is None else v for v in line] for line in values]
        image = axis.imshow(shown, cmap="viridis" if RANKS[rank] else "viridis_r", aspect="auto")
        for i, line in enumerate(values):
            for j, v in enumerate(line):
                axis.text(j, i, "-" if v is None else f"{v:,.4g}", ha="center", va="center", color="white",
                          fontsize="small")
        axis.set_xticks(range(len(second)), second)
        axis.set_yticks(range(len(first)), first)
        axis.set_xlabel(axes[1])
        axis.set_ylabel(axes[0])
        axis.set_title(f"{policy}: {rank}", fontsize="small")
        figure.colorbar(image, ax=axis, shrink=0.8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
