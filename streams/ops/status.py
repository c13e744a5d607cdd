"""`sizer status [--portfolio P] [--json]`: each portfolio as the worker group holds it
now, read from its tables' changelogs (`kafka.changelogs`, the reader `sizer control
status` uses): equity, peak and drawdown, phase and streaks, every latch and
protection in force, positions by symbol, open reservations by order with their
age, and each cap with its exposure and the room left under it (`engine.room`).

The caps are those of the configuration the workers last published on the
`config` topic, unless `--preset`/`--config` names another.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from streams.config import SizingConfig
from streams.engine import protections
from streams.engine.room import cap_room
from streams.engine.state import PortfolioState, controls_from_wire, exposure_from_wire, streak_from_wire
from streams.errors import TopicMismatch
from streams.kafka.changelogs import read_tables
from streams.kafka.io import published_configs, read_topic
from streams.kafka.settings import ConnectionSettings
from streams.kafka.topics import TopicSet, require_topics
from streams.text import table
from streams.wire.decimals import canonical
from streams.wire.models import format_event_time

HUNDREDTH = Decimal("0.01")


async def published_config(kafka: ConnectionSettings, topics: TopicSet) -> tuple[SizingConfig, int]:
    """The configuration the workers published last on the `config` topic, and when
    (epoch ms). Raises TopicMismatch when none was ever published."""
    spec = topics["config"]
    client = kafka.for_role("status")
    await require_topics(client, [spec.name], "Read")
    latest: tuple[SizingConfig, int] | None = None
    for record, config in published_configs(sorted(await read_topic(client, spec.name, spec.partitions),
                                                    key=lambda r: r.timestamp)):
        latest = (config, record.timestamp)
    if latest is None:
        raise TopicMismatch(f"no configuration on {spec.name}: no worker of group {kafka.app_id} has started "
                            f"(or give --preset/--config)")
    return latest


def state_of(tables: dict[str, Any], config: SizingConfig) -> PortfolioState:
    """A portfolio's state from its table values (the dedupe windows left out: their
    chunks live in the `windows` table, and nothing shown here reads them)."""
    exposure = tables.get("exposure")
    streak = tables.get("streak")
    return PortfolioState(
        exposure_from_wire({**exposure, "seen_signals": []} if exposure else None),
        streak_from_wire({**streak, "seen_fills": []} if streak else None, config),
        controls_from_wire(tables.get("controls")),
    )


def _time(epoch_ms: int | None) -> str | None:
    return None if epoch_ms is None else format_event_time(epoch_ms)


def portfolio_status(portfolio_id: str, state: PortfolioState, config: SizingConfig, now_ms: int) -> dict[str, Any]:
    """One portfolio as JSON data (USD and quantities as canonical decimal strings;
    times RFC 3339; ages in seconds of wall time at `now_ms`, epoch ms)."""
    exposure, streak, controls = state
    peak = streak.peak
    drawdown_pct = ((peak - streak.equity) * 100 / peak).quantize(HUNDREDTH) if peak > 0 else None
    in_force: list[dict[str, Any]] = []
    if controls.halt is not None:
        halt = controls.halt
        in_force.append({"latch": halt.reason, "by": halt.operator, "command_id": halt.command_id,
                         "detail": halt.text, "since": _time(halt.ts)})
    if streak.drawdown:
        in_force.append({"latch": "LOSS_STREAK_CUT", "by": "sizer",
                         "detail": f"sizes x{canonical(config.drawdown_cut)} until {config.recovery_streak} "
                                   f"consecutive wins (now {streak.consecutive_wins})", "since": None})
    if streak.equity <= 0:
        in_force.append({"latch": "EQUITY_EXHAUSTED", "by": "sizer", "detail": f"equity={canonical(streak.equity)}: "
                         "every open is rejected until equity is positive", "since": None})
    if exposure.latest_ts is not None:
        # the engine's own checks, at the portfolio clock: what the next open would meet
        clock, read = exposure.latest_ts, {}
        refusals = [protections.loss_guard(streak, clock, config, read), protections.order_rate(exposure, clock, config, read),
                    *(protections.cooldown(symbol, streak, clock, config, read) for symbol in sorted(streak.last_loss))]
        in_force += [{"latch": refused.reason, "by": "sizer", "detail": refused.detail, "since": None}
                     for refused in refusals if refused is not None]
    ttl = config.reservation_ttl_ms
    reservations = [{
        "order_id": order_id, "symbol": r.symbol, "qty": canonical(r.qty), "filled": canonical(r.filled_qty),
        "price": canonical(r.price), "notional": canonical(r.notional), "made": _time(r.ts),
        "age_s": max(0, now_ms - r.ts) // 1000, "lapses": _time(r.ts + ttl) if ttl is not None else None,
    } for order_id, r in sorted(exposure.reservations.items(), key=lambda item: (item[1].ts, item[0]))]
    mark_basis = config.exposure_basis == "mark"
    positions = []
    for symbol, position in sorted(exposure.positions.items()):
        mark = exposure.marks.get(symbol) if mark_basis else None
        value = position.entry_notional if mark is None else position.qty * mark.price
        positions.append({"symbol": symbol, "qty": canonical(position.qty),
                          "entry_notional": canonical(position.entry_notional), "value": canonical(value)})
    return {
        "portfolio_id": portfolio_id,
        "config_hash": config.config_hash,  # the portfolio's own (`SizingConfig.for_portfolio`)
        "clock": _time(exposure.latest_ts),
        "equity": canonical(streak.equity), "peak_equity": canonical(peak),
        "drawdown_pct": canonical(drawdown_pct) if drawdown_pct is not None else None,
        "max_drawdown_pct": canonical(config.max_drawdown_pct) if config.max_drawdown_pct is not None else None,
        "phase": streak.phase, "consecutive_wins": streak.consecutive_wins,
        "consecutive_losses": streak.consecutive_losses, "closed_trades": streak.closed_trades,
        "in_force": in_force,
        "caps": [{"cap": room.cap, "symbol": room.symbol, "limit": canonical(room.limit),
                  "exposure": canonical(room.exposure), "remaining": canonical(room.remaining),
                  "used_pct": canonical((room.used * 100).quantize(HUNDREDTH))} for room in cap_room(state, config)],
        "positions": positions,
        "reservations": reservations,
    }


async def read_status(kafka: ConnectionSettings, topics: TopicSet, config: SizingConfig | None,
                      portfolio_id: str | None = None, now_ms: int | None = None) -> dict[str, Any]:
    """`{"config_hash", "config_source", "portfolios": [portfolio_status...]}` for every
    portfolio the tables hold (or only `portfolio_id`; a portfolio the tables do not
    hold yet is shown fresh: the starting equity, nothing held). `config` None: the
    workers' published configuration."""
    tables = await read_tables(kafka, topics, "status")
    if config is None:
        config, published = await published_config(kafka, topics)
        source = f"published by the workers {format_event_time(published)}"
    else:
        source = "given"
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    wanted = sorted(tables) if portfolio_id is None else [portfolio_id]
    return {"config_hash": config.config_hash, "config_source": source, "preset": config.preset,
            "portfolios": [portfolio_status(p, state_of(tables.get(p, {}), config.for_portfolio(p)),
                                            config.for_portfolio(p), now_ms) for p in wanted]}


def render(status: dict[str, Any]) -> str:
    """The status as a desk reads it: per portfolio, a summary line, what is in
    force, the caps with their room, positions and reservations."""
    lines = [f"config {status['config_hash']} (preset {status['preset']}, {status['config_source']})"]
    if not status["portfolios"]:
        lines.append("no portfolio has state yet")
    for p in status["portfolios"]:
        drawdown = "n/a" if p["drawdown_pct"] is None else p["drawdown_pct"] + "%"
        kill = f" (kill switch at {p['max_drawdown_pct']}%)" if p["max_drawdown_pct"] is not None else ""
        lines += ["", f"{p['portfolio_id']}   clock {p['clock'] or '(no input yet)'}",
                  f"  equity {p['equity']}  peak {p['peak_equity']}  drawdown {drawdown}{kill}  phase {p['phase']}  "
                  f"wins {p['consecutive_wins']}  losses {p['consecutive_losses']}  closed {p['closed_trades']}"]
        if p["in_force"]:
            for latch in p["in_force"]:
                since = f" since {latch['since']}" if latch["since"] else ""
                lines.append(f"  IN FORCE {latch['latch']} by {latch['by']}{since}: {latch['detail']}")
        else:
            lines.append("  in force: nothing (sizing normally)")
        lines += table(("cap", "limit", "exposure", "remaining", "used"),
                        [(cap["cap"] + (f" {cap['symbol']}" if cap["symbol"] else ""), cap["limit"],
                          cap["exposure"], cap["remaining"], cap["used_pct"] + "%") for cap in p["caps"]], "  ")
        if p["positions"]:
            lines += table(("position", "qty", "entry notional", "value"),
                            [(x["symbol"], x["qty"], x["entry_notional"], x["value"]) for x in p["positions"]], "  ")
        if p["reservations"]:
            lines += table(("reserved for order", "symbol", "qty", "filled", "notional", "made", "age s"),
                            [(r["order_id"], r["symbol"], r["qty"], r["filled"], r["notional"], r["made"], r["age_s"])
                             for r in p["reservations"]], "  ")
    return "\n".join(lines)
