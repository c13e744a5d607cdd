"""`sizer evaluate` end to end on real history: a slice of GOOG re-derived by hand,
the same run twice byte for byte, and bad input reported, never a crash."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from streams import cli
from streams.history import evaluate as ev
from streams.history import markets as mk
from streams.history.sweep import configurations, policy_config

DAY = 86_400_000


def goog_slice() -> mk.Bars:
    # 2005-03-24 .. 2005-11-22: four Donchian trades, a drawdown and its recovery
    return mk.load(mk.MARKETS["goog"]).slice(150, 320)


def test_goog_slice_trades_are_the_turtle_rule_at_next_open():
    bars = goog_slice()
    closes = [v for _, _, t, v in mk.trades(bars, mk.STRATEGIES["donchian"], "d", "GOOG")
              if v.get("type") == "position_closed"]
    # entry 2005-05-03 close 226.19 > prior 20-day high: 1000 / 226.19 -> 4.421 (step 0.0001),
    # filled at the 2005-05-04 open 227.23, exit signal 2005-06-15, closed at the 06-16 open 274.26
    assert [(c["qty"], c["price"], c["realized_pnl"]) for c in closes] == [
        ("4.421", "274.26", "207.91963"),       # 4.421 x (274.26 - 227.23)
        ("3.2883", "288.12", "-59.715528"),     # 3.2883 x (288.12 - 306.28)
        ("3.3913", "302", "24.315621"),         # 3.3913 x (302 - 294.83)
        ("2.942", "416.47", "215.0602"),        # still open at the end: closed at the last close
    ]


def test_goog_slice_figures_checked_by_hand():
    bars = goog_slice()
    run = ev.build_market(mk.MARKETS["goog"], [mk.STRATEGIES["donchian"]], bars)
    chosen = configurations([policy_config("static")], [])
    result, _ = ev.evaluate([run], chosen, ev.Settings(resamples=10), workers=1)
    figures = result["markets"]["goog"]["policies"]["static"]

    # equity 100,000 -> 100,207.92 (06-16) -> 100,148.20 (08-01) -> 100,172.52 (10-13) -> 100,387.58 (11-22)
    assert figures["pnl"] == 387.5799
    assert figures["max_drawdown"] == 59.7155            # 100,207.91963 -> 100,148.204102
    assert figures["recovery_days"] == 113               # 2005-08-01 -> 2005-11-22
    assert figures["recovered"] is True
    # per-close returns over the equity before each close; 204 calendar days (05-03 .. 11-22)
    equity, returns = Decimal(100000), []
    for pnl in ("207.91963", "-59.715528", "24.315621", "215.0602"):
        returns.append(float(Decimal(pnl) / equity))
        equity += Decimal(pnl)
    mean = sum(returns) / 4
    sd = math.sqrt(sum((r - mean) ** 2 for r in returns) / 3)
    assert figures["sharpe"] == round(mean / sd * math.sqrt(4 / (204 / 365.25)), 4)
    # capital efficiency: PnL over the time-weighted exposure of the four positions (qty x fill
    # price, held from the fill to the close) and their one-second reservations, over 204 days
    held = 0.0
    events = list(mk.trades(bars, mk.STRATEGIES["donchian"], "d", "GOOG"))
    for k, (ts, _, topic, value) in enumerate(events):
        if value.get("type") == "order_filled":
            close_ts = next(t for t, _, _, v in events[k:] if v.get("type") == "position_closed")
            held += float(Decimal(value["qty"]) * Decimal(value["price"])) * (close_ts - ts)
        elif topic == "signals":
            held += float(Decimal(events[k + 1][3]["qty"]) * Decimal(value["price"])) * (events[k + 1][0] - ts)
    mean_exposure = held / (204 * DAY)
    assert figures["capital_efficiency"] == round(387.579923 / mean_exposure, 4)
    assert figures["mean_exposure"] == round(mean_exposure, 4)


def _evaluate(tmp_path, *args: str) -> tuple[int, str, str]:
    done = subprocess.run([str(Path(sys.executable).with_name("sizer")), "evaluate", *args], capture_output=True, text=True,
                          cwd=tmp_path)
    return done.returncode, done.stdout, done.stderr


def test_the_same_run_twice_gives_byte_identical_json(tmp_path):
    args = ["--market", "goog", "--market", "btcusd", "--resamples", "40"]
    first, second = tmp_path / "a", tmp_path / "b"
    assert cli.main(["evaluate", *args, "--out", str(first)]) == 0
    assert cli.main(["evaluate", *args, "--out", str(second)]) == 0
    assert (first / "evaluate.json").read_bytes() == (second / "evaluate.json").read_bytes()
    assert (first / "evaluate.csv").read_bytes() == (second / "evaluate.csv").read_bytes()
    report = json.loads((first / "evaluate.json").read_text())
    rows = report["markets"]["goog"]["promises"]["graduated"]
    assert [r["promise"] for r in rows] == [p.name for p in ev.PROMISES]
    assert all(r["verdict"] in ("held", "not held", "undecided") for r in rows)
    for r in rows:
        low, high = r["interval"]
        if r["verdict"] == "held":
            assert low >= r["promised"][0]
        elif r["verdict"] == "not held":
            assert high < r["promised"][0]
    # monthly BTC/USD is too short for RSI(2)'s 200-bar average: reported and skipped
    assert report["markets"]["btcusd"]["strategies"]["rsi2"] == {"skipped": "156 bars, needs at least 203"}
    for picture in ("equity.png", "drawdown.png", "promises.png"):
        assert (first / picture).stat().st_size > 10_000


def test_a_strategy_without_any_signal_is_skipped_not_a_crash():
    bars = mk.load(mk.MARKETS["goog"]).slice(0, 60)  # RSI(2) needs 203 bars, Donchian gives one trade
    run = ev.build_market(mk.MARKETS["goog"], [mk.STRATEGIES["rsi2"], mk.STRATEGIES["sma_cross"]], bars)
    assert run.strategies["rsi2"] == {"skipped": "60 bars, needs at least 203"}
    assert run.strategies["sma_cross"] == {"skipped": "no signal over the history"}
    assert run.lines == []
    result, _ = ev.evaluate([run], configurations([policy_config("static"), policy_config("graduated")], []),
                            ev.Settings(resamples=10), workers=1)
    assert result["markets"]["goog"]["skipped"] == "no strategy could run on this history"
    assert "skipped: goog/rsi2: 60 bars, needs at least 203" in ev.table(result)


@pytest.mark.parametrize("args, named", [
    (["--market", "ftse"], "--market: unknown 'ftse'; known: sp500, nasdaq, wti, goog, eurusd, btcusd"),
    (["--strategy", "macd"], "--strategy: unknown 'macd'; known: sma_cross, donchian, rsi2"),
])
def test_unknown_names_are_one_line_naming_the_known_ones(tmp_path, args, named):
    code, out, err = _evaluate(tmp_path, *args)
    assert code == 2
    assert err.strip().splitlines() == [f"sizer: {named}"] or named in err.strip().splitlines()[-1]
    assert "Traceback" not in err


@pytest.mark.parametrize("option", ["--out", "--journals"])
def test_an_unwritable_output_directory_is_one_line_not_a_traceback(tmp_path, option):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, out, err = _evaluate(tmp_path, "--market", "btcusd", "--resamples", "10", option, str(blocker / "sub"))
    assert code == 2
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"sizer: {option}: cannot write {blocker / 'sub'}")


@pytest.mark.parametrize("policies, missing", [
    (["static", "conviction"], "graduated"),
    (["graduated"], "static"),
])
def test_promises_without_static_or_graduated_are_said_not_computed(tmp_path, policies, missing):
    args = [a for p in policies for a in ("--policy", p)]
    code, out, err = _evaluate(tmp_path, "--market", "btcusd", "--resamples", "10", *args)
    assert code == 0
    assert "Traceback" not in err
    assert f"promises: not tested, no {missing} policy among --policy" in out


def test_a_block_as_long_as_the_history_is_refused_it_would_resample_nothing(tmp_path):
    # BTC/USD monthly spans 2012-01 .. 2025: a 10000-day block is the whole history,
    # every resample the measured path, an interval of zero width
    code, out, err = _evaluate(tmp_path, "--market", "btcusd", "--resamples", "10", "--block-days", "10000")
    assert code == 2
    assert "Traceback" not in err
    assert err.strip().startswith("sizer: --block-days 10000: more than half of btcusd's history")


@pytest.mark.parametrize("resamples", ["0", "-5", "1000000000"])
def test_resamples_out_of_range_are_one_line(tmp_path, resamples):
    code, out, err = _evaluate(tmp_path, "--market", "btcusd", "--resamples", resamples)
    assert code == 2
    assert err.strip().splitlines() == ["sizer: --resamples: at least 10 and at most 100,000; --block-days: at least 1"]


def test_with_a_grid_each_graduated_point_is_compared_with_static_at_the_same_point():
    run = ev.build_market(mk.MARKETS["goog"], [mk.STRATEGIES["donchian"]], goog_slice())
    chosen = configurations([policy_config("static"), policy_config("graduated")],
                            [("pair_max_usd", ["500", "2000"])])
    result, _ = ev.evaluate([run], chosen, ev.Settings(resamples=10), workers=1)
    policies = result["markets"]["goog"]["policies"]
    # fixed sizing at $500 and at $2,000 per signal: four times the drawdown
    assert policies["static pair_max_usd=2000"]["max_drawdown"] > 3 * policies["static pair_max_usd=500"]["max_drawdown"]
    for point in ("500", "2000"):
        rows = result["markets"]["goog"]["promises"][f"graduated pair_max_usd={point}"]
        drawdown = next(r for r in rows if r["promise"] == "drawdown")
        assert drawdown["fixed"] == policies[f"static pair_max_usd={point}"]["max_drawdown"]
    assert result["settings"]["pairs"] == {"graduated pair_max_usd=500": "static pair_max_usd=500",
                                           "graduated pair_max_usd=2000": "static pair_max_usd=2000"}


@pytest.mark.parametrize("package, args, named", [
    ("arch", ["--market", "sp500"], "market sp500: arch is not installed"),
    ("matplotlib", ["--market", "btcusd", "--out", "out"], "--out: matplotlib is not installed"),
])
def test_a_missing_package_is_one_line_exit_3(tmp_path, package, args, named):
    # a package that cannot be imported, ahead of the installed one on the path
    (tmp_path / "hide" / package).mkdir(parents=True)
    (tmp_path / "hide" / package / "__init__.py").write_text(
        f"raise ModuleNotFoundError('No module named {package}', name={package!r})\n")
    done = subprocess.run([str(Path(sys.executable).with_name("sizer")), "evaluate", "--resamples", "10", *args],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path / "hide")})
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"sizer evaluate: {named}" + (", the plots need it" if package == "matplotlib" else "")
        + " (pip install -e '.[evaluate]')"]
