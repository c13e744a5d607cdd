"""Review of `sizer sweep` (branch sweep-review): what an adversarial reading found.

Each test names the problem it demonstrates; the last one guards what held (a sweep
of the recorded configuration over an adversarial journal is `sizer replay`)."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from streams.config import load_config
from streams.engine import InputPosition, PortfolioState, apply_control, apply_fill, decide, order_id_for
from streams.history import sweep
from streams.wire import journal
from streams.history.replay import replay
from tests.builders import T0, canceled, closed, filled, instrument, journal_text, leg, signal

SIZER = str(Path(sys.executable).with_name("sizer"))
ETH = instrument("ETH-USD", leg("ETHUSDT", qty_step="0.001", min_qty="0.001"))


def sizer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SIZER, *args], capture_output=True, text=True, check=False)


def test_a_what_if_that_rejects_a_reused_order_id_gets_none_of_the_new_orders_fills():
    # s1 is accepted, filled and closed; 65 other orders end (past ENDED_ORDERS_KEPT) and,
    # with a dedupe window of 1, s1 is sent again: the recording accepts it again, under
    # the same order id, and its fill and close follow. A what-if that refuses the resend
    # (min_score 0.5) must get none of them; it got the new order's fill scaled by the
    # FIRST order's what-if qty (what_if_qty is never forgotten), and its loss.
    recorded = sweep.with_values(load_config("conviction"), {"signal_dedupe_window": 1})
    what_if = sweep.with_values(recorded, {"min_score": "0.5"})
    o1 = order_id_for("p1", "s1")
    t = T0
    entries = [ETH, signal("p1", "ETH-USD", "1", "10", t, signal_id="s1"), filled("p1", o1, "ETH-USD", "100", "10", t + 1),
               closed("p1", "ETH-USD", "100", "10", "5", t + 2)]
    for i in range(65):
        t += 10
        entries += [signal("p1", "ETH-USD", "1", "10", t, signal_id=f"x{i}"),
                    canceled("p1", order_id_for("p1", f"x{i}"), t + 1)]
    t += 10
    entries += [signal("p1", "ETH-USD", "0.1", "10", t, signal_id="s1"),
                filled("p1", o1, "ETH-USD", "37", "10", t + 1, event_id="late-fill"),
                closed("p1", "ETH-USD", "37", "10", "-50", t + 2, event_id="late-close")]
    history = sweep.from_journal(journal_text(entries).splitlines(), recorded)
    trail: list = []
    sweep.simulate(history, what_if, trail)

    assert ("decision", "s1", "rejected", "LOW_CONFIDENCE", None, None) in trail
    assert [step for step in trail if step[1] in ("late-fill", "late-close")] == []


def test_an_axis_named_like_a_figure_does_not_overwrite_the_figure_in_the_csv(tmp_path):
    # `max_drawdown_pct` is both a setting (the kill switch) and a figure (the drawdown):
    # the CSV row was built as {**figures, **params}, so the figure's column held the
    # setting's value, under a header that names the column twice.
    entries = [ETH]
    for i, pnl in enumerate(["100", "-50", "-150", "120"]):
        oid = order_id_for("p1", f"s{i}")
        ts = T0 + i * 60_000
        entries += [signal("p1", "ETH-USD", "1", "10", ts, signal_id=f"s{i}"),
                    filled("p1", oid, "ETH-USD", "100", "10", ts + 1), closed("p1", "ETH-USD", "100", "10", pnl, ts + 2)]
    path = tmp_path / "j.jsonl"
    path.write_text(journal_text(entries))
    done = sizer("sweep", "--journal", str(path), "--set", "max_drawdown_pct=5,50", "--workers", "1", "--json",
                 "--csv", str(tmp_path / "s.csv"))
    assert done.returncode == 0, done.stderr
    figures = {row["label"]: row["max_drawdown_pct"] for row in json.loads(done.stdout)["configurations"]}
    with open(tmp_path / "s.csv") as handle:
        header = next(csv.reader(handle))
        handle.seek(0)
        rows = list(csv.DictReader(handle))
    assert len(header) == len(set(header))
    assert {row["label"]: row["max_drawdown_pct"] for row in rows} == figures  # the figure: 0.1998
    assert figures["conviction max_drawdown_pct=5"] == "0.1998"


def test_the_csv_counts_rejections_as_the_table_does_zero_when_none(tmp_path):
    # conviction (linear, no min_score, shrink) accepts both: $650, then $580 shrunk to
    # the $350 left under the $1000 pair cap; graduated's tiers refuse both scores, below
    # 0.60 (LOW_CONFIDENCE). The `rejected` column was `REASON=n;...`: empty for
    # conviction, where the table says 0.
    entries = [ETH, signal("p1", "ETH-USD", "0.5", "10", T0, signal_id="s1"),
               signal("p1", "ETH-USD", "0.4", "10", T0 + 1000, signal_id="s2")]
    path = tmp_path / "j.jsonl"
    path.write_text(journal_text(entries))
    done = sizer("sweep", "--journal", str(path), "--policy", "conviction", "--policy", "graduated",
                 "--workers", "1", "--csv", str(tmp_path / "s.csv"))
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "s.csv") as handle:
        rows = {row["policy"]: row for row in csv.DictReader(handle)}

    assert (rows["conviction"]["accepted"], rows["conviction"]["accepted_notional"]) == ("2", "1000")
    assert (rows["conviction"]["rejected"], rows["conviction"]["rejected LOW_CONFIDENCE"]) == ("0", "0")
    assert (rows["graduated"]["accepted"], rows["graduated"]["rejected"]) == ("0", "2")
    assert rows["graduated"]["rejected LOW_CONFIDENCE"] == "2"
    assert [key for key in rows["graduated"] if key.startswith("rejected ")] == ["rejected LOW_CONFIDENCE"]


def test_the_mean_exposure_of_a_history_without_a_span_is_the_mean_of_the_total():
    # Three portfolios, each $1000 at the same instant: the total exposure after each
    # input is 1000, 2000, 3000 (metrics(): "exposure: the sum over portfolios ...; the
    # plain mean of the samples when the span is zero"), so the mean is 2000. It was the
    # mean of the per-portfolio samples (1000); one millisecond later it jumps to 3000.
    entries = [ETH, *(signal(p, "ETH-USD", "1", "10", T0, signal_id=f"s-{p}") for p in ("p1", "p2", "p3"))]
    config = load_config("conviction")
    history = sweep.from_journal(journal_text(entries).splitlines(), config)
    figures = sweep.metrics(history, config, sweep.simulate(history, config))

    assert figures["peak_exposure"] == "3000"
    assert figures["mean_exposure"] == "2000"


@pytest.mark.parametrize("option, target", [("--plot", "file"), ("--csv", "file/s.csv"), ("--plot", "file/sub")])
def test_an_unwritable_output_is_one_line_naming_it_not_a_traceback(tmp_path, option, target):
    (tmp_path / "file").write_text("")
    path = tmp_path / "j.jsonl"
    path.write_text(journal_text([ETH, signal("p1", "ETH-USD", "1", "10", T0)]))
    done = sizer("sweep", "--journal", str(path), "--workers", "1", option, str(tmp_path / target))

    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("sizer:")]
    assert option in line and str(tmp_path / target) in line


@pytest.mark.parametrize("lines", ["", "garbage\n{\"topic\": \"nope\"}\n"])
def test_a_journal_without_a_signal_to_sweep_is_an_error(tmp_path, lines):
    path = tmp_path / "j.jsonl"
    path.write_text(lines)
    done = sizer("sweep", "--journal", str(path), "--workers", "1")

    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("sizer: --journal:")


def test_a_bad_recorded_configuration_names_recorded(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text(journal_text([ETH, signal("p1", "ETH-USD", "1", "10", T0)]))
    done = sizer("sweep", "--journal", str(path), "--workers", "1", "--recorded", "nosuch")

    assert done.returncode == 2
    assert done.stderr.startswith("sizer: --recorded:"), done.stderr


def test_a_bad_set_value_is_one_line_that_does_not_blame_the_recorded_configuration(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text(journal_text([ETH, signal("p1", "ETH-USD", "1", "10", T0)]))
    done = sizer("sweep", "--journal", str(path), "--workers", "1", "--set", "min_fraction=2")

    assert done.returncode == 2
    assert "recorded" not in done.stderr  # --recorded is another option of this command
    [line] = done.stderr.splitlines()
    assert "--set min_fraction=2" in line and "min_fraction" in line and "less than or equal to 1" in line


# -- what held: the sweep of the recorded configuration is the replay ------------------------------------

def _leg(venue, side="buy", step="0.001", min_qty="0", max_qty=None, min_notional="0", max_notional=None):
    value = leg(venue, side, qty_step=step, min_qty=min_qty, max_qty=max_qty, min_notional=min_notional)
    if max_notional is not None:
        value["max_notional"] = max_notional
    return value


LEGS = {
    "BTC": [_leg("BTCUSDT", min_qty="0.001", min_notional="5")],
    "PAIR": [_leg("ETHUSDT", "buy", step="0.004", min_qty="0.008", min_notional="5"),
             _leg("ETHUSDT-PERP", "sell", step="0.006", min_qty="0.03", max_qty="2", min_notional="10",
                  max_notional="900")],
    "BIG": [_leg("BIGUSDT", step="1", min_qty="1", min_notional="1000")],
    "TINY": [_leg("TINY", step="0.000000000000000001")],  # ORDER_OUT_OF_BOUNDS: notional past 18 places
    "LOWMAX": [_leg("LOW", step="1", max_qty="0.5")],  # a max_qty below one step
    # contract legs: a linear swap of 10 base units a contract, an inverse perp of 100 quote units
    "CRV": [_leg("CRVUSDT", step="0.1", min_notional="5"),
            {**_leg("CRV-USDT-SWAP", "sell", step="1", min_qty="1"), "kind": "linear", "contract_size": "10"}],
    "INV": [_leg("BTCSPOT", step="0.00001", min_notional="5"),
            {**_leg("BTCUSD_PERP", "sell", step="1", min_qty="1"), "kind": "inverse", "contract_size": "100"}],
}
VENUE_LEGS = {"PAIR": ["ETHUSDT", "ETHUSDT-PERP", "OTHER"], "CRV": ["CRVUSDT", "CRV-USDT-SWAP"],
              "INV": ["BTCSPOT", "BTCUSD_PERP"]}
PRICES = {"BTC": ["48000", "51000.5"], "PAIR": ["150", "17.25", "999.9"], "BIG": ["3", "2500"],
          "TINY": ["0.37", "0.123456789"], "LOWMAX": ["3"], "NOPE": ["10"], "CRV": ["2.3195", "0.41"],
          "INV": ["50000", "61234.5"]}


def adversarial(seed: int, n: int = 500) -> list[str]:
    """Duplicate signal ids and fill event ids, resent signals of ended orders, stale
    signals, per-leg, partial, over- and unknown-order fills, cancels, closes with and
    without a position, operator commands (duplicates too), unscored signals, future
    timestamps and bad lines."""
    r = random.Random(seed)
    lines = [json.dumps(instrument(s, *legs)) for s, legs in LEGS.items()]
    sent: list[tuple[str, str, str]] = []
    events: list[str] = []
    ts = T0
    for i in range(n):
        ts = max(0, ts + (r.choice([0, 1, 500, 5_000, 20_000, 61_000, -1000]) if r.random() < 0.97 else -400_000))
        p = r.choice(["p1", "p1", "p2", "p3"])
        k = r.random()
        if k < 0.4:
            sym = r.choice([*LEGS, "NOPE"])
            if sent and r.random() < 0.12:
                p, sid, sym = r.choice(sent)
            else:
                sid = f"s{i}"
            entry = signal(p, sym, r.choice(["0", "0.3", "0.6", "0.85", "0.851", "1", "0.777"]),
                           r.choice(PRICES[sym]), ts, side=r.choice(["buy", "sell"]), signal_id=sid)
            if r.random() < 0.1:
                del entry["value"]["score"]
            sent.append((p, sid, sym))
        elif k < 0.75 and sent:
            p, sid, sym = r.choice(sent[-12:])
            oid = order_id_for(p, sid) if r.random() < 0.93 else "o-unknown"
            eid = r.choice(events) if events and r.random() < 0.08 else f"f{i}"
            if r.random() < 0.7:
                entry = filled(p, oid, sym if sym != "NOPE" else "BTC", r.choice(["0.001", "0.5", "1", "3", "0.004"]),
                               r.choice(PRICES[sym]), ts, final=r.random() < 0.5, event_id=eid)
                if sym in VENUE_LEGS and r.random() < 0.7:  # in that leg's units (contracts on CRV, INV)
                    entry["value"]["venue_symbol"] = r.choice(VENUE_LEGS[sym])
            else:
                entry = canceled(p, oid, ts, event_id=eid)
            events.append(eid)
        elif k < 0.92:
            eid = r.choice(events) if events and r.random() < 0.05 else f"f{i}"
            entry = closed(p, r.choice([*LEGS, "NOPE"]), r.choice(["0.001", "0.5", "1", "100"]), "10",
                           r.choice(["-3000", "-30", "-1", "0", "2", "45", "1500"]), ts, event_id=eid)
            events.append(eid)
        elif k < 0.985:
            kind = r.choice(["halt", "resume", "resume", "resume", "release", "adjust_equity"])
            entry = {"topic": "controls", "value": {
                "command_id": f"c{i % 40}", "portfolio_id": p, "ts": ts, "type": kind, "operator": "a", "reason": "r"}}
            if kind == "release":
                entry["value"]["order_id"] = order_id_for(*r.choice(sent)[:2]) if sent else "o-x"
            if kind == "adjust_equity":
                entry["value"]["amount"] = r.choice(["-25000", "5000", "-99000", "-150000", "120000"])
            if kind == "halt" and r.random() < 0.4:
                entry["value"]["mode"] = "reduce_only"
            if kind == "resume" and r.random() < 0.3:
                entry["value"]["clear"] = ["max_drawdown"]
        else:
            lines.append(r.choice(["not json", '{"topic":"signals","value":{}}']))
            continue
        if r.random() < 0.03:
            entry["timestamp"] = ts - r.choice([0, 120_000])
        lines.append(json.dumps(entry))
    return lines


RECORDED = {
    "kill-switch-contracts": ("conviction", {"max_drawdown_pct": "20", "max_hedge_residual_pct": "15",
                                             "pair_cap_usd": "1500"}),
    "conviction": ("conviction", {}),
    "graduated": ("graduated", {}),
    "static": ("conviction", {"enabled": False}),
    "lapsing-mark-skip-pct": ("conviction", {"max_signal_age_s": "30", "max_future_skew_s": "30", "reservation_ttl_s": "60", "exposure_basis": "mark",
                                             "cap_mode": "skip", "portfolio_cap": "2%", "min_score": "0.2"}),
    "graduated-shrink-kill-switch": ("graduated", {"cap_mode": "shrink", "portfolio_cap": "0.5%", "pair_cap_usd": "300",
                                                   "max_drawdown_pct": "1", "unscored_signals": "static"}),
    "narrow-windows-tiers": ("conviction", {"signal_dedupe_window": 1, "fill_dedupe_window": 1, "conviction": "tiers",
                                            "drawdown": True, "loss_streak": 1, "max_signal_age_s": None}),
}


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(RECORDED))
def test_a_sweep_of_the_recorded_configuration_is_the_replay_decision_by_decision(name, seed):
    base, values = RECORDED[name]
    config = sweep.with_values(load_config(base), values) if values else load_config(base)
    lines = adversarial(seed)
    replayed: list = []
    replay(lines, config, lambda decision, order: replayed.append(decision), lambda n, reason: None)
    history = sweep.from_journal(lines, config)
    trail: list = []
    run = sweep.simulate(history, config, trail)

    decisions = [step[1:] for step in trail if step[0] == "decision"]
    assert decisions == [(d.signal_id, d.outcome, d.reason, d.qty, d.notional) for d in replayed]
    assert run.changed == 0 and run.unfilled == 0
    accepted = [d for d in replayed if d.outcome == "accepted"]
    assert (run.accepted, run.notional) == (len(accepted), sum((d.notional for d in accepted), Decimal(0)))
    recorded_fills = {}
    for line in lines:
        if line.startswith('{"topic": "fills"'):
            value = json.loads(line)["value"]
            recorded_fills.setdefault(value["event_id"], []).append(value)
    for kind, event_id, qty, pnl in (step for step in trail if step[0] in ("fill", "close")):
        assert any(Decimal(v["qty"]) == qty and (pnl is None or Decimal(v.get("realized_pnl", "NaN")) == pnl)
                   for v in recorded_fills[event_id] if "qty" in v)  # unscaled

    # and the lean decision is the explained one, input by input
    states: dict = {}
    instruments: dict = {}
    fresh = PortfolioState.fresh(config)
    offsets = {"signals": 0, "fills": 0, "controls": 0, "instruments": 0}
    said = ("signal_id", "outcome", "reason", "order_id", "qty", "notional", "config_hash")
    for entry in journal.read(lines, config.max_future_skew_ms):
        if entry.error is not None:
            continue
        message, offset = entry.message, offsets[entry.topic]
        offsets[entry.topic] += 1
        if entry.topic == "instruments":
            instruments[message.symbol] = message
            continue
        state = states.get(message.portfolio_id, fresh)
        if entry.topic == "fills":
            states[message.portfolio_id] = apply_fill(message, state, config, offset).state
        elif entry.topic == "controls":
            states[message.portfolio_id] = apply_control(message, state, config, offset).state
        else:
            position = InputPosition("signals", 0, offset)
            full = decide(message, instruments.get(message.symbol), state, config, position)
            lean = decide(message, instruments.get(message.symbol), state, config, position, explained=False)
            assert [getattr(lean.decision, f) for f in said] == [getattr(full.decision, f) for f in said]
            assert lean.state == full.state and lean.order is None
            assert lean.decision.trace["state"]["exposure"] == full.decision.trace["state"]["exposure"]
            states[message.portfolio_id] = full.state
