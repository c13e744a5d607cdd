"""The protections and per-portfolio settings on the broker: the worker decides a desk's
day as `sizer replay` does, and the audit re-derives every decision from topic history
(each portfolio's effective configuration resolved from the config topic)."""

from __future__ import annotations

from tests.protections_journal import DESK_CONFIG, DESK_DAY_DECISIONS, desk_day


def test_a_desks_day_of_protections_decides_as_replay_and_audits_clean(deployment, workers, tmp_path):
    config = tmp_path / "desk.toml"
    config.write_text(DESK_CONFIG)
    workers("--config", str(config))

    # signals, fills and commands are three topics consumed independently: each run of
    # one topic is applied before the next run is sent, so live order is the journal's
    signals = 0
    run: list[tuple[str, dict]] = []

    def send() -> None:
        nonlocal signals
        if not run:
            return
        role = run[0][0]
        deployment.publish(run)
        if role == "signals":
            signals += len(run)
            deployment.wait_for("decisions", signals)
        elif role in ("fills", "controls"):
            deployment.wait_consumed(role)
        run.clear()

    for entry in desk_day():
        if run and run[0][0] != entry["topic"]:
            send()
        run.append((entry["topic"], entry["value"]))
    send()

    decisions = [record.json() for record in deployment.wait_for("decisions", len(DESK_DAY_DECISIONS))]
    decided = {(d["portfolio_id"], d["signal_id"]): d["reason"] or d["notional"] for d in decisions}
    assert decided == {(p, s): said for p, s, said in DESK_DAY_DECISIONS}
    assert len({d["config_hash"] for d in decisions}) == 2  # desk-b decides under its own table

    code, report, stderr = deployment.audit()
    assert code == 0 and report["ok"], (report, stderr)
    assert report["verified"] == len(DESK_DAY_DECISIONS)
    assert report["unresolvable_config_hashes"] == []
