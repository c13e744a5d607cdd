"""The protections through the real `sizer replay` and `sizer sweep`: journals that
combine them with halts, equity adjustments, leg fills and reservations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from streams.engine import order_id_for
from tests.builders import T0, closed, filled, journal_text, reduce, signal
from tests.protections_journal import DESK_CONFIG, DESK_DAY_DECISIONS, ETH, MIN, SOL, desk_day

SIZER = str(Path(sys.executable).with_name("sizer"))


def said(decisions):
    return [(d["reason"] or d["notional"]) for d in decisions]


def test_a_desks_exit_is_sized_when_its_entry_filled_the_portfolio_cap(replay):
    decisions = replay([ETH, signal("p1", "ETH", "1", "2000", signal_id="in"),
                        filled("p1", order_id_for("p1", "in"), "ETH", "0.5", "2000", ts=T0 + 1),
                        reduce("p1", "ETH", "2100", "sell", ts=T0 + 2, signal_id="out")],
                       env={"SIZING_PORTFOLIO_CAP": "1000"})
    assert said(decisions) == ["1000", "1050"]
    exit_ = decisions[1]
    assert exit_["trace"]["reduce"] == {"held_qty": "0.5", "position_side": "buy", "reduce_fraction": "1",
                                        "qty": "0.5"}
    assert "caps" not in exit_["trace"]


def test_protections_combined_with_halts_equity_adjustments_leg_fills_and_reservations(replay, tmp_path):
    config = tmp_path / "desk.toml"
    config.write_text(DESK_CONFIG)
    decisions = replay(desk_day(), "--config", str(config))
    assert [(d["portfolio_id"], d["signal_id"], d["reason"] or d["notional"]) for d in decisions] == DESK_DAY_DECISIONS
    by_id = {(d["portfolio_id"], d["signal_id"]): d for d in decisions}
    assert by_id[("desk-a", "s1")]["trace"]["caps"]["bound_by"] == "GROUP_CAP_REACHED"
    assert by_id[("desk-a", "x2")]["qty"] == "2.5"  # a quarter of the 10 held, no cap read
    assert by_id[("desk-a", "b4")]["trace"]["detail"].startswith("paused_until=2026-01-01T00:16:00.000Z")
    assert by_id[("desk-a", "b3")]["trace"]["caps"]["group_cap"] == "999.8"  # 2% of 99,990 - 50,000
    hashes = {d["portfolio_id"]: d["config_hash"] for d in decisions}
    assert hashes["desk-a"] != hashes["desk-b"]


def test_a_sweep_answers_what_a_cooldown_would_have_done(tmp_path):
    entries = [ETH]
    for i in range(6):  # a losing trade every ten minutes
        sid = f"s{i}"
        ts = T0 + i * 10 * MIN
        entries += [signal("p1", "ETH", "1", "100", ts, signal_id=sid),
                    filled("p1", order_id_for("p1", sid), "ETH", "10", "100", ts=ts + 1000),
                    closed("p1", "ETH", "10", "99", "-10", ts=ts + 2000)]
    path = tmp_path / "journal.jsonl"
    path.write_text(journal_text(entries))
    done = subprocess.run([SIZER, "sweep", "--journal", str(path), "--json", "--preset", "conviction",
                           "--set", "cooldown_after_loss_s=1,1800"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    rows = {row["label"]: row for row in json.loads(done.stdout)["configurations"]}
    short, long_ = rows["conviction cooldown_after_loss_s=1"], rows["conviction cooldown_after_loss_s=1800"]
    assert short["accepted"] == 6
    assert long_["accepted"] == 2  # at 0 and at 40 min: each loss cools the next three signals down


def test_a_sweep_policy_from_a_config_file_applies_its_portfolio_tables(tmp_path):
    policy = tmp_path / "desks.toml"
    policy.write_text('preset = "conviction"\n[portfolios."desk-b"]\nportfolio_cap = "1000"\n')
    entries = [ETH, SOL] + [signal(p, symbol, "1", "100", T0 + i * 1000, signal_id=f"s{i}")
                            for p in ("desk-a", "desk-b") for i, symbol in enumerate(("ETH", "SOL"))]
    path = tmp_path / "journal.jsonl"
    path.write_text(journal_text(entries))
    done = subprocess.run([SIZER, "sweep", "--journal", str(path), "--json", "--policy", str(policy),
                           "--policy", "conviction"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    rows = {row["label"]: row for row in json.loads(done.stdout)["configurations"]}
    assert (rows["conviction"]["accepted"], rows["conviction"]["rejected"]) == (4, {})
    assert (rows["desks"]["accepted"], rows["desks"]["rejected"]) == (3, {"EXPOSURE_CAP_REACHED": 1})
    assert rows["desks"]["peak_vs_cap_pct"] == "100"  # desk-b against its own 1,000 USD cap
