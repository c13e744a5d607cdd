"""`sizer sweep` over small journals with hand-computed expectations: PnL scaled
to the what-if size, figures of a five-close example, a policy's own streak."""

from __future__ import annotations

import csv
import io
import json
import statistics
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

from streams.history import sweep
from streams.config import load_config
from streams.engine import order_id_for
from tests.builders import T0, canceled, closed, control, filled, instrument, journal_text, leg, signal

SIZER = str(Path(sys.executable).with_name("sizer"))
ETH = instrument("ETH-USD", leg("ETHUSDT", qty_step="0.001", min_qty="0.001"))
SOL = instrument("SOL-USD", leg("SOLUSDT", qty_step="0.001", min_qty="0.001"))
MINUTE = 60_000


def run_sweep(tmp_path: Path, entries: list[dict], *options: str) -> dict:
    path = tmp_path / "journal.jsonl"
    path.write_text(journal_text(entries))
    done = subprocess.run([SIZER, "sweep", "--journal", str(path), "--json", *options],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def by_label(report: dict) -> dict[str, dict]:
    return {row["label"]: row for row in report["configurations"]}


def trade(portfolio: str, sid: str, symbol: str, score: str, ts: int, pnl: str, qty: str,
          fills: tuple[str, ...] | None = None) -> list[dict]:
    """A signal at price 10, its order filled (in parts when `fills` given) ten seconds
    later, and the position closed a minute after the signal with `pnl`."""
    order_id = order_id_for(portfolio, sid)
    parts = fills or (qty,)
    entries = [signal(portfolio, symbol, score, "10", ts, signal_id=sid)]
    entries += [filled(portfolio, order_id, symbol, part, "10", ts + 10_000 + i, final=i == len(parts) - 1)
                for i, part in enumerate(parts)]
    entries.append(closed(portfolio, symbol, qty, "10", pnl, ts + MINUTE))
    return entries


def history_of(entries: list[dict], recorded_preset: str) -> sweep.History:
    return sweep.from_journal(journal_text(entries).splitlines(), load_config(recorded_preset))


def test_halving_every_order_halves_every_scaled_fill_and_close_pnl(tmp_path):
    # conviction, score 1: the whole per-pair maximum, $1000 = 100 at 10; a $500 maximum halves it
    entries = [ETH, *trade("p1", "s1", "ETH-USD", "1", T0, "30", "100"),
               *trade("p1", "s2", "ETH-USD", "1", T0 + 2 * MINUTE, "-10", "100", fills=("60", "40"))]
    entries += [signal("p1", "ETH-USD", "1", "10", T0 + 4 * MINUTE, signal_id="s3"),
                filled("p1", order_id_for("p1", "s3"), "ETH-USD", "100", "10", T0 + 4 * MINUTE + 1),
                closed("p1", "ETH-USD", "50", "10", "8", T0 + 5 * MINUTE),
                closed("p1", "ETH-USD", "50", "10", "-4", T0 + 6 * MINUTE)]
    history = history_of(entries, "conviction")
    recorded, halved = [], []
    conviction = load_config("conviction")
    sweep.simulate(history, conviction, recorded)
    sweep.simulate(history, sweep.with_values(conviction, {"pair_max_usd": "500"}), halved)

    fills = [(r, h) for r, h in zip(recorded, halved) if r[0] != "decision"]
    assert [r[0] for r, _ in fills] == ["fill", "close", "fill", "fill", "close", "fill", "close", "close"]
    assert [h[1] for _, h in fills] == [r[1] for r, _ in fills]  # the same events, none left out
    for r, h in fills:
        assert h[2] == r[2] / 2  # every scaled quantity is half the recorded one
        if r[0] == "close":
            assert h[3] == r[3] / 2  # and every close's PnL
    assert [h[2] for _, h in fills] == [50, 50, 30, 20, 50, 50, 25, 25]
    assert [h[3] for _, h in fills if h[0] == "close"] == [15, -5, 4, -2]

    report = by_label(run_sweep(tmp_path, entries, "--preset", "conviction", "--set", "pair_max_usd=1000,500"))
    full, half = report["conviction pair_max_usd=1000"], report["conviction pair_max_usd=500"]
    assert (full["pnl"], half["pnl"]) == ("24", "12")
    assert (full["accepted_notional"], half["accepted_notional"]) == ("3000", "1500")
    assert (full["peak_exposure"], half["peak_exposure"]) == ("1000", "500")
    assert (full["max_drawdown"], half["max_drawdown"]) == ("10", "5")
    assert full["decisions_changed"] == 0 and half["decisions_changed"] == 3


def test_a_policy_that_rejects_a_signal_gets_no_fill_or_pnl_from_it(tmp_path):
    # Recorded under conviction: s1 (score 1) $1000 = 100 ETH at 10, won 40; s2 (score 0.5)
    # 0.65 x $1000 = 65 SOL, lost 100. Graduated: s1 tier 1 = $100 = 10 ETH (a tenth),
    # s2 LOW_CONFIDENCE.
    entries = [ETH, SOL, *trade("p1", "s1", "ETH-USD", "1", T0, "40", "100"),
               *trade("p1", "s2", "SOL-USD", "0.5", T0 + 1000, "-100", "65")]
    trail: list = []
    sweep.simulate(history_of(entries, "conviction"), load_config("graduated"), trail)

    assert trail == [
        ("decision", "s1", "accepted", None, Decimal("10"), Decimal("100")),
        ("fill", trail[1][1], Decimal("10"), None),
        ("close", trail[2][1], Decimal("10"), Decimal("4")),
        ("decision", "s2", "rejected", "LOW_CONFIDENCE", None, None),
    ]  # s2's fill and close are not there
    report = by_label(run_sweep(tmp_path, entries, "--recorded", "conviction", "--policy", "conviction",
                                "--policy", "graduated"))
    assert report["conviction"]["pnl"] == "-60"
    assert report["graduated"]["pnl"] == "4"
    assert report["graduated"]["rejected"] == {"LOW_CONFIDENCE": 1}
    assert report["graduated"]["peak_exposure"] == "100"


def test_a_close_is_scaled_by_the_what_if_share_of_the_recorded_position(tmp_path):
    # Both orders in ETH, open together (recorded with a pair cap that lets them):
    # recorded 100 + 65 = 165 held; graduated holds only s1's 10. One close of the whole
    # position, +33: the what-if books 33 x 10/165 = 2.
    recorded = tmp_path / "wide.toml"
    recorded.write_text('preset = "conviction"\npair_cap_usd = "5000"\n')
    s1, s2 = order_id_for("p1", "s1"), order_id_for("p1", "s2")
    entries = [ETH, signal("p1", "ETH-USD", "1", "10", T0, signal_id="s1"),
               signal("p1", "ETH-USD", "0.5", "10", T0 + 1, signal_id="s2"),
               filled("p1", s1, "ETH-USD", "100", "10", T0 + 2), filled("p1", s2, "ETH-USD", "65", "10", T0 + 3),
               closed("p1", "ETH-USD", "165", "10.2", "33", T0 + 4)]
    report = by_label(run_sweep(tmp_path, entries, "--recorded", str(recorded), "--policy", str(recorded),
                                "--policy", "graduated"))
    assert report["wide"]["pnl"] == "33" and report["wide"]["accepted"] == 2
    assert report["graduated"]["pnl"] == "2"


def test_drawdown_sharpe_and_recovery_equal_the_hand_computation_on_five_closes(tmp_path):
    pnls = ["100", "-50", "-150", "120", "90"]
    entries = [ETH]
    for i, pnl in enumerate(pnls):
        entries += trade("p1", f"s{i}", "ETH-USD", "1", T0 + i * MINUTE, pnl, "100")
    report = run_sweep(tmp_path, entries, "--preset", "conviction")
    [row] = report["configurations"]

    # equity 100000 -> 100100 (peak) -> 100050 -> 99900 (trough: 200 below the peak)
    # -> 100020 -> 100110 (back above 100100 at the fifth close, 2 minutes after the trough)
    assert row["pnl"] == "110"
    assert row["closes"] == 5
    assert row["max_drawdown"] == "200"
    assert row["max_drawdown_pct"] == "0.1998"  # 200 / 100100 = 0.19980...%
    assert row["recovery_s"] == "120"
    equity = [Fraction(100000), Fraction(100100), Fraction(100050), Fraction(99900), Fraction(100020)]
    returns = [Fraction(p) / e for p, e in zip(map(Fraction, pnls), equity)]
    sharpe = statistics.mean(returns) / Fraction(statistics.stdev(returns))
    assert abs(Decimal(row["sharpe"]) - Decimal(float(sharpe))) <= Decimal("0.00005")
    # returns 0.001, -0.00049950, -0.00149925, 0.00120120, 0.00089982: mean 0.00022045,
    # sample deviation 0.00117333
    assert row["sharpe"] == "0.1879"
    # $1000 reserved, then held, from the first signal to the last close: always 1000
    assert row["mean_exposure"] == "1000"
    assert row["peak_vs_cap_pct"] == "20"  # of the $5000 cap
    assert row["pnl_per_exposure"] == "0.11"


def test_a_graduated_policys_own_losing_streak_halves_its_own_later_sizes():
    def sizes(score: str) -> list:
        # recorded under conviction; two losing trades at `score`, then a strong signal
        entries = [ETH, *trade("p1", "s1", "ETH-USD", score, T0, "-100", "100"),
                   *trade("p1", "s2", "ETH-USD", score, T0 + 2 * MINUTE, "-100", "100"),
                   signal("p1", "ETH-USD", "0.9", "10", T0 + 4 * MINUTE, signal_id="s3")]
        trail: list = []
        sweep.simulate(history_of(entries, "conviction"), load_config("graduated"), trail)
        return [(t[1], t[3] or t[5]) for t in trail if t[0] == "decision"] + \
            [("pnl", t[3]) for t in trail if t[0] == "close"]

    # Graduated took both losers at its own sizes: s1 $100 = 10 (a tenth of the recorded
    # 100), lost 100 x 10/100 = 10; s2 0.1% of 99990 = $99.99 = 9.999, lost 9.999. Two
    # losses of its own: drawdown mode, s3 = 99980.001 x 0.1% x 0.5 = 49.99 (4.999 at 10).
    assert sizes("1") == [("s1", 100), ("s2", Decimal("99.99")), ("s3", Decimal("49.99")),
                          ("pnl", -10), ("pnl", Decimal("-9.999"))]
    # Graduated rejected both (score 0.5): the recording's losses are not its own, full size.
    assert sizes("0.5") == [("s1", "LOW_CONFIDENCE"), ("s2", "LOW_CONFIDENCE"), ("s3", 100)]


def test_policies_and_a_grid_rank_and_the_same_sweep_twice_is_byte_identical(tmp_path):
    entries = [ETH, SOL]
    for i in range(12):
        symbol = "ETH-USD" if i % 2 else "SOL-USD"
        entries += trade("p1", f"s{i}", symbol, ("0.95", "0.7", "0.5")[i % 3], T0 + i * MINUTE,
                         ("50", "-20", "30", "-60")[i % 4], "100")
    path = tmp_path / "journal.jsonl"
    path.write_text(journal_text(entries))
    command = [SIZER, "sweep", "--journal", str(path), "--recorded", "static", "--policy", "static",
               "--policy", "conviction", "--policy", "graduated", "--set", "drawdown_cut=0.25,0.5",
               "--set", "pair_max_usd=500,1000", "--rank", "max_drawdown", "--workers", "2"]
    first = subprocess.run([*command, "--json", "--csv", str(tmp_path / "csv" / "a.csv"),
                            "--plot", str(tmp_path / "plots")], capture_output=True, check=False)
    second = subprocess.run([*command, "--json"], capture_output=True, check=False)
    table = subprocess.run(command, capture_output=True, text=True, check=False)

    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    report = json.loads(first.stdout)
    rows = report["configurations"]
    assert len(rows) == 12 and [r["rank"] for r in rows] == list(range(1, 13))
    drawdowns = [Decimal(r["max_drawdown"]) for r in rows]
    assert drawdowns == sorted(drawdowns)
    labels = {r["label"] for r in rows}
    assert "graduated drawdown_cut=0.25 pair_max_usd=500" in labels and "static drawdown_cut=0.5 pair_max_usd=1000" in labels
    static = by_label(report)["static drawdown_cut=0.5 pair_max_usd=1000"]
    assert static["decisions_changed"] == 0  # the recorded configuration decides as recorded
    # the CSV holds the same rows in the same order, grid values in their own columns
    with open(tmp_path / "csv" / "a.csv") as handle:  # the folder made by --csv
        csv_rows = list(csv.DictReader(handle))
    assert [r["label"] for r in csv_rows] == [r["label"] for r in rows]
    assert [r["pnl"] for r in csv_rows] == [r["pnl"] for r in rows]
    assert {r["drawdown_cut"] for r in csv_rows} == {"0.25", "0.5"}
    # plots: equity curves, exposure against the cap, and the two-axis heatmap
    for name in ("equity.png", "exposure.png", "heatmap.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the terminal table: one line per configuration, in rank order, and the figure
    lines = table.stdout.splitlines()
    assert [line.split("  ")[1].strip() for line in lines[3:15]] == [r["label"] for r in rows]
    assert "signals x 12 configurations in" in table.stderr


def test_the_figure_lines_say_one_in_the_singular_and_mention_shared_runs_only_when_there_are_some(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text(journal_text([ETH, *trade("p1", "s1", "ETH-USD", "1", T0, "30", "100")]))
    sweep_of = [SIZER, "sweep", "--journal", str(path), "--preset", "conviction", "--workers", "1"]

    alone = subprocess.run(sweep_of, capture_output=True, text=True, check=False)
    # conviction never reads the drawdown cut: the second configuration takes the first one's run
    shared = subprocess.run([*sweep_of, "--set", "drawdown_cut=0.25,0.5"], capture_output=True, text=True,
                            check=False)

    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.splitlines()[0] == \
        "sweep over journal history: 1 signal, 2 fills (1 close), 1 portfolio; ranked by pnl"
    assert "sweep: 1 signal x 1 configuration in " in alone.stderr
    assert " on 1 process, 1 run): " in alone.stderr
    assert shared.returncode == 0, shared.stderr
    assert (" on 1 process, 1 run: the other 1 differs from one only in settings its run never read): "
            in shared.stderr)


def test_a_journal_read_by_several_processes_gives_the_history_read_by_one(monkeypatch):
    # Four portfolios over two instruments (one re-listed half-way), with a halt and a
    # resume, a cancel, a bad line and a fill of an order of another portfolio: the
    # recorded decisions re-made per group of portfolios are those made in one pass.
    entries = [ETH, SOL]
    for i in range(24):
        portfolio, symbol = f"p{i % 4 + 1}", ("ETH-USD", "SOL-USD")[i % 2]
        entries += trade(portfolio, f"s{i}", symbol, ("0.95", "0.35", "0.7")[i % 3], T0 + i * MINUTE,
                         ("50", "-80", "30")[i % 3], "100")
        if i == 9:
            entries += [instrument("SOL-USD", leg("SOLUSDT", qty_step="0.01", min_qty="0.01")),
                        control("p2", "halt", T0 + i * MINUTE), canceled("p3", order_id_for("p3", "s6"))]
        if i == 17:
            entries += [control("p2", "resume", T0 + i * MINUTE), filled("p1", order_id_for("p4", "s3"), "ETH-USD",
                                                                         "5", "10", T0 + i * MINUTE)]
    lines = [*journal_text(entries).splitlines(), "not json"]
    bad_one: list = []
    one = sweep.from_journal(lines, load_config("conviction"), lambda n, r: bad_one.append((n, r)))
    monkeypatch.setattr(sweep.events, "PARALLEL_READ_MIN_INPUTS", 0)
    bad_three: list = []
    three = sweep.from_journal(lines, load_config("conviction"), lambda n, r: bad_three.append((n, r)), workers=3)

    assert three == one and bad_three == bad_one and len(bad_one) == 1
    assert one.signals == 24 and len(one.portfolios) == 4
    assert {event[5][0] for event in one.events if event[0] == sweep.SIGNAL} == {"accepted", "rejected"}


def test_a_bad_grid_or_policy_is_a_configuration_error(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text(journal_text([ETH]))
    for options in (["--set", "min_fraction=0.9", "--set", "max_fraction=0.5"], ["--set", "no_such=1"],
                    ["--policy", "bold"], ["--set", "min_fraction"]):
        done = subprocess.run([SIZER, "sweep", "--journal", str(path), *options], capture_output=True, text=True)
        assert done.returncode == 2, (options, done.stderr)
        assert done.stderr.startswith("sizer: ")


def losing_streaks() -> list[dict]:
    """Two portfolios, each with two losing streaks among wins: a graduated policy
    enters drawdown mode and sizes by its cut."""
    entries = [ETH, SOL]
    for i in range(16):
        portfolio, symbol = ("p1", "p2")[i % 2], ("ETH-USD", "SOL-USD")[i // 2 % 2]
        entries += trade(portfolio, f"s{i}", symbol, ("1", "0.9", "0.7", "0.95")[i % 4], T0 + i * 2 * MINUTE,
                         ("-100", "-100", "-80", "60", "-90", "-70", "50", "40")[i // 2 % 8], "100")
    return entries


def test_configurations_that_differ_only_in_settings_their_run_never_reads_share_one_run(monkeypatch):
    # conviction never reads the drawdown settings (no drawdown mode); graduated does.
    history = history_of(losing_streaks(), "conviction")
    chosen = sweep.configurations([sweep.policy_config("conviction"), sweep.policy_config("graduated")],
                                  sweep.parse_grid(["drawdown_cut=0.25,0.5", "loss_streak=2,3"]))
    runs: list = []
    simulate = sweep.simulate
    monkeypatch.setattr(sweep.runner, "simulate", lambda h, config: runs.append(config) or simulate(h, config))

    outcomes = sweep.sweep(history, chosen, workers=1)

    # one conviction run for its four configurations, four graduated runs
    assert len(runs) == 5
    assert [o.shares_run_of for o in outcomes] == [None, chosen[0], chosen[0], chosen[0], None, None, None, None]
    # every configuration's figures are those of its own run
    for configuration, outcome in zip(chosen, outcomes):
        run = simulate(history, configuration.config)
        assert outcome.configuration is configuration
        assert outcome.metrics == sweep.metrics(history, configuration.config, run)
        assert (outcome.first_changes, outcome.compared, outcome.identical) == \
            (run.first_changes, run.compared, run.identical)
    assert len({str(o.metrics) for o in outcomes[4:]}) == 4  # the cut and the streak matter to graduated


def test_a_setting_a_run_read_with_another_value_is_another_run():
    conviction = load_config("conviction")
    config = sweep.SettingsRead(conviction)
    assert config.pair_max_usd == conviction.pair_max_usd and config.read == {"pair_max_usd"}
    more = sweep.with_values(conviction, {"pair_max_usd": "2000", "drawdown_cut": "0.25"})
    written_otherwise = sweep.with_values(conviction, {"pair_max_usd": "1000.0"})

    assert sweep.same_run({"pair_max_usd", "config_hash"}, conviction, more, False) is False
    assert sweep.same_run({"drawdown_cut"}, conviction, more, False) is False
    assert sweep.same_run({"min_fraction", "config_hash"}, conviction, more, False) is True
    assert sweep.same_run({"min_fraction", "config_hash"}, conviction, more, True) is False  # Kafka history
    assert sweep.same_run({"pair_max_usd"}, conviction, written_otherwise, False) is False


def test_a_sweep_over_two_processes_gives_exactly_what_one_gives():
    history = history_of(losing_streaks(), "conviction")
    chosen = sweep.configurations([sweep.policy_config(p) for p in sweep.POLICIES],
                                  sweep.parse_grid(["drawdown_cut=0.25,0.5", "pair_max_usd=500,1000"]))

    one, two = sweep.sweep(history, chosen, workers=1), sweep.sweep(history, chosen, workers=2)

    def shown(outcomes: list) -> list:
        # which run a configuration shares depends on which finished first: not its figures
        return [(o.configuration, o.metrics, o.curves, o.first_changes, o.compared, o.identical) for o in outcomes]
    assert shown(two) == shown(one)
    assert [o.configuration for o in one] == chosen


def test_exposure_curves_put_each_portfolio_against_its_own_cap_and_sum_only_the_rest(monkeypatch):
    # three portfolios under a 2,000 USD cap each: p-full at its cap, p-mid at half, p-low at 15%;
    # one line of the three summed over the sum of their caps would read 55% for all of them
    monkeypatch.setenv("SIZING_PORTFOLIO_CAP", "2000")
    config = load_config(preset="conviction")
    entries = [ETH, SOL,
               signal("p-full", "ETH-USD", "1", "100", ts=T0, signal_id="f1"),
               signal("p-full", "SOL-USD", "1", "100", ts=T0 + 1000, signal_id="f2"),
               signal("p-mid", "ETH-USD", "1", "100", ts=T0 + 2000, signal_id="m1"),
               signal("p-low", "ETH-USD", "0", "100", ts=T0 + 3000, signal_id="l1")]
    history = sweep.from_journal(journal_text(entries).splitlines(), config)
    use = sweep.curves(history, config, sweep.simulate(history, config), most=2)["use"]

    assert list(use["portfolios"]) == ["p-full", "p-mid"]  # nearest their own cap first
    assert use["portfolios"]["p-full"][-1] == (T0 + 1000, 100.0)
    assert use["portfolios"]["p-mid"][-1] == (T0 + 2000, 50.0)
    assert (use["others"], use["rest"]) == (1, [(T0 + 3000, 15.0)])  # 300 of p-low's own 2,000
