"""The protections (DESIGN.md, "Protections"), each in event time and off unless configured."""

from decimal import Decimal as D

import pytest

from streams.config import SizingConfig, load_config
from streams.engine import order_id_for
from streams.errors import ConfigError
from tests.builders import T0, closed, control, filled, instrument, leg, reduce, signal
from tests.unit.engine_helpers import feed, processor

ETH = instrument("ETH", leg("ETHUSDT", qty_step="0.001"))
MIN = 60_000


def conviction(**settings):
    """The conviction preset with `settings` on top, as the config file would give them."""
    return SizingConfig.from_effective({**load_config("conviction").effective(), **settings})


def decided(results):
    return [r.decision.reason or r.decision.notional for r in results]


# Reduce signals

def test_the_exit_of_a_position_that_filled_the_cap_is_sized_and_accepted():
    proc = processor(conviction(portfolio_cap="1000"))
    opened, = feed(proc, [ETH, signal("p1", "ETH", "1", "2000", signal_id="in")])
    feed(proc, [filled("p1", opened.order.order_id, "ETH", "0.5", "2000", ts=T0 + 1)])

    exit_, = feed(proc, [reduce("p1", "ETH", "2100", "sell", ts=T0 + 2)])

    assert opened.decision.notional == D("1000")
    assert exit_.decision.outcome == "accepted", exit_.decision.trace.get("detail")
    assert (exit_.order.side, exit_.order.qty, exit_.order.notional) == ("sell", D("0.5"), D("1050"))
    assert exit_.decision.trace["reduce"] == {"held_qty": D("0.5"), "position_side": "buy",
                                              "reduce_fraction": D(1), "qty": D("0.5")}
    assert proc.store.load("p1").reserved() == 0  # a reduce reserves nothing


def test_a_partial_reduce_rounds_down_to_the_step_and_its_fill_does_not_add_to_the_position():
    proc = processor(conviction())
    opened, = feed(proc, [ETH, signal("p1", "ETH", "1", "100")])
    feed(proc, [filled("p1", opened.order.order_id, "ETH", "10", "100", ts=T0 + 1)])

    part, = feed(proc, [reduce("p1", "ETH", "100", "sell", fraction="0.3333", ts=T0 + 2)])
    feed(proc, [filled("p1", part.order.order_id, "ETH", "3.333", "100", ts=T0 + 3),
                closed("p1", "ETH", "3.333", "100", "0", ts=T0 + 3)])

    assert part.order.qty == D("3.333")  # 10 x 0.3333 = 3.333
    assert proc.store.load("p1").exposure.positions["ETH"].qty == D("6.667")


def test_a_reduce_with_nothing_held_or_on_the_positions_own_side_is_nothing_to_reduce():
    proc = processor(conviction())
    nothing, = feed(proc, [ETH, reduce("p1", "ETH", "100", "sell")])
    opened, = feed(proc, [signal("p1", "ETH", "1", "100", ts=T0 + 1)])
    feed(proc, [filled("p1", opened.order.order_id, "ETH", "10", "100", ts=T0 + 2)])
    same_side, = feed(proc, [reduce("p1", "ETH", "100", "buy", ts=T0 + 3)])

    assert nothing.decision.reason == "NOTHING_TO_REDUCE"
    assert nothing.decision.trace["detail"] == "symbol=ETH held_qty=0"
    assert same_side.decision.reason == "NOTHING_TO_REDUCE"
    assert "position_side=buy" in same_side.decision.trace["detail"]


def test_a_whole_reduce_is_never_refused_for_dust_but_a_partial_one_meets_the_minimums():
    dusty = instrument("DUST", leg("DUSTUSDT", qty_step="0.001", min_qty="0.01", min_notional="5"))
    proc = processor(conviction())
    feed(proc, [dusty, filled("p1", "external", "DUST", "0.004", "100")])  # an order the sizer never made

    partial, = feed(proc, [reduce("p1", "DUST", "100", "sell", fraction="0.5", ts=T0 + 1)])
    whole, = feed(proc, [reduce("p1", "DUST", "100", "sell", ts=T0 + 2)])

    assert partial.decision.reason == "BELOW_MIN_QTY"
    assert whole.decision.outcome == "accepted" and whole.order.qty == D("0.004")


def test_a_reduce_is_not_blocked_by_any_cap_or_protection():
    settings = dict(portfolio_cap="100", group_caps={"L1": "50"}, cooldown_after_loss_s="3600",
                    loss_guard_count=1, loss_guard_window_s="3600", loss_guard_pause_s="3600",
                    max_orders_per_window=1, order_rate_window_s="3600")
    grouped = instrument("ETH", leg("ETHUSDT", qty_step="0.001"), group="L1")
    proc = processor(conviction(**settings))
    feed(proc, [grouped, filled("p1", "external", "ETH", "2", "100"),
                closed("p1", "ETH", "1", "90", "-10", ts=T0 + 1)])

    opened, exited = feed(proc, [signal("p1", "ETH", "1", "100", ts=T0 + 2),
                                 reduce("p1", "ETH", "100", "sell", ts=T0 + 3)])

    assert opened.decision.reason == "LOSS_GUARD"
    assert exited.decision.outcome == "accepted" and exited.order.qty == D("1")


def test_a_reduce_is_stopped_by_a_full_halt():
    proc = processor(conviction())
    feed(proc, [ETH, filled("p1", "external", "ETH", "1", "100"), control("p1", "halt")])
    exited, = feed(proc, [reduce("p1", "ETH", "100", "sell", ts=T0 + 1)])
    assert exited.decision.reason == "HALTED"


# Cooldown

def test_cooldown_rejects_opens_of_the_losing_symbol_until_the_clock_passes_it():
    btc = instrument("BTC", leg("BTCUSDT", qty_step="0.001"))
    proc = processor(conviction(cooldown_after_loss_s="1800"))
    feed(proc, [ETH, btc, closed("p1", "ETH", "1", "90", "-10", ts=T0)])

    results = feed(proc, [signal("p1", "ETH", "1", "100", ts=T0 + 29 * MIN),
                          signal("p1", "BTC", "1", "100", ts=T0 + 29 * MIN),
                          signal("p1", "ETH", "1", "100", ts=T0 + 30 * MIN)])

    assert decided(results) == ["COOLDOWN", D("1000"), D("1000")]
    assert results[0].decision.trace["detail"] == (
        "symbol=ETH loss_ts=2026-01-01T00:00:00.000Z until=2026-01-01T00:30:00.000Z clock=2026-01-01T00:29:00.000Z")
    assert results[0].decision.trace["protections"]["cooldown"]["until"] == "2026-01-01T00:30:00.000Z"


def test_a_winning_close_starts_no_cooldown_and_an_unconfigured_cooldown_is_off():
    on = processor(conviction(cooldown_after_loss_s="1800"))
    off = processor(conviction())
    for proc, pnl in ((on, "10"), (off, "-10")):
        feed(proc, [ETH, closed("p1", "ETH", "1", "90", pnl)])
    assert decided(feed(on, [signal("p1", "ETH", "1", "100", ts=T0 + 1)])) == [D("1000")]
    result, = feed(off, [signal("p1", "ETH", "1", "100", ts=T0 + 1)])
    assert result.decision.notional == D("1000") and "protections" not in result.decision.trace


# Loss guard

def test_loss_guard_pauses_every_open_after_n_losses_in_the_window():
    btc = instrument("BTC", leg("BTCUSDT", qty_step="0.001"))
    proc = processor(conviction(loss_guard_count=2, loss_guard_window_s="3600", loss_guard_pause_s="600"))
    feed(proc, [ETH, btc, closed("p1", "ETH", "1", "90", "-10", ts=T0),
                closed("p1", "ETH", "1", "90", "-10", ts=T0 + 61 * MIN)])  # outside the first's window
    before, = feed(proc, [signal("p1", "BTC", "1", "100", ts=T0 + 62 * MIN)])
    feed(proc, [closed("p1", "ETH", "1", "90", "-10", ts=T0 + 63 * MIN)])  # the second in the window: trips

    results = feed(proc, [signal("p1", "BTC", "1", "100", ts=T0 + 72 * MIN),
                          signal("p1", "ETH", "1", "100", ts=T0 + 73 * MIN)])

    assert before.decision.outcome == "accepted"
    assert decided(results)[0] == "LOSS_GUARD"
    assert results[0].decision.trace["detail"].startswith("paused_until=2026-01-01T01:13:00.000Z")
    assert results[1].decision.outcome == "accepted"


# Order rate

def test_order_rate_rejects_opens_beyond_the_window_and_counts_only_accepted_opens():
    proc = processor(conviction(max_orders_per_window=2, order_rate_window_s="60", pair_cap_usd="100000",
                                 portfolio_cap="100000"))
    results = feed(proc, [ETH] + [signal("p1", "ETH", "0.1", "100", ts=T0 + s * 1000) for s in (0, 10, 20, 60, 61)])
    assert decided(results) == [D("370"), D("370"), "RATE_LIMITED", D("370"), "RATE_LIMITED"]
    assert results[2].decision.trace["detail"] == "opens_in_window=2 max_orders_per_window=2 order_rate_window_s=60"


# Group caps

def test_group_cap_shrinks_an_open_to_the_groups_remaining_room():
    l1 = [instrument(s, leg(s + "USDT", qty_step="0.001"), group="L1") for s in ("ETH", "SOL")]
    proc = processor(conviction(group_caps={"L1": "1500"}))
    results = feed(proc, l1 + [signal("p1", "ETH", "1", "100"), signal("p1", "SOL", "1", "100"),
                               signal("p1", "SOL", "1", "100")])
    assert decided(results) == [D("1000"), D("500"), "GROUP_CAP_REACHED"]
    caps = results[1].decision.trace["caps"]
    assert (caps["group"], caps["group_cap"], caps["group_exposure"], caps["group_remaining"]) == (
        "L1", D("1500"), D("1000"), D("500"))
    assert results[2].decision.trace["detail"] == "group_remaining=0 budget=500"  # the pair cap shrank it first


def test_group_cap_as_a_percentage_of_equity_in_skip_mode_skips():
    l1 = instrument("ETH", leg("ETHUSDT", qty_step="0.001"), group="L1")
    proc = processor(conviction(group_caps={"L1": "1.5%"}, starting_equity="100000", cap_mode="skip"))
    results = feed(proc, [l1, signal("p1", "ETH", "1", "100"), signal("p1", "ETH", "1", "100")])
    assert decided(results)[1] in ("PAIR_CAP_REACHED", "GROUP_CAP_REACHED")
    other = processor(conviction(group_caps={"L1": "1.5%"}, pair_cap_usd="5000", cap_mode="skip"))
    results = feed(other, [l1, signal("p1", "ETH", "1", "100"), signal("p1", "ETH", "1", "100")])
    assert decided(results) == [D("1000"), "GROUP_CAP_REACHED"]
    assert results[1].decision.trace["detail"] == "group_remaining=500 budget=1000"


# The cap named when the cap refuses (issue 33)

def test_a_cap_that_leaves_less_than_the_exchange_minimum_is_named_with_its_remainder():
    strict = instrument("ETH", leg("ETHUSDT", qty_step="0.001", min_notional="5"))
    proc = processor(conviction(portfolio_cap="1001"))
    results = feed(proc, [strict, signal("p1", "ETH", "1", "100"), signal("p1", "ETH", "1", "100", ts=T0 + 1),
                          instrument("BTC", leg("BTCUSDT", qty_step="0.001", min_notional="5")),
                          signal("p1", "BTC", "1", "100", ts=T0 + 2)])
    btc = results[-1].decision
    assert btc.reason == "EXPOSURE_CAP_REACHED"
    assert btc.trace["detail"] == ("remaining=1 budget=1000 BELOW_MIN_NOTIONAL: "
                                   "leg=BTCUSDT notional=1 min_notional=5")
    assert btc.trace["exchange"]["reason"] == "BELOW_MIN_NOTIONAL"
    assert btc.trace["caps"]["bound_by"] == "EXPOSURE_CAP_REACHED"


def test_an_exchange_minimum_the_uncapped_budget_misses_too_stays_the_exchanges():
    big = instrument("ETH", leg("ETHUSDT", qty_step="0.001", min_notional="5000"))
    result, = feed(processor(conviction(portfolio_cap="900")), [big, signal("p1", "ETH", "1", "100")])
    assert result.decision.reason == "BELOW_MIN_NOTIONAL"


# Per-portfolio settings

def test_portfolio_tables_apply_the_most_specific_match_and_stamp_their_own_hash():
    base = conviction(portfolios={"desk-a-*": {"portfolio_cap": "1500", "cooldown_after_loss_s": "60"},
                                  "desk-a-1": {"portfolio_cap": "700"}})
    proc = processor(base)
    btc = instrument("BTC", leg("BTCUSDT", qty_step="0.001"))
    results = feed(proc, [ETH, btc] + [signal(p, "ETH", "1", "100") for p in ("desk-a-1", "desk-a-2", "desk-b")]
                   + [signal(p, "BTC", "1", "100", ts=T0 + 1) for p in ("desk-a-1", "desk-a-2", "desk-b")])
    assert decided(results) == [D("700"), D("1000"), D("1000"), "EXPOSURE_CAP_REACHED", D("500"), D("1000")]
    hashes = [r.decision.config_hash for r in results[:3]]
    assert hashes[2] == base.config_hash and len(set(hashes)) == 3
    assert {c.config_hash for c in base.effective_configurations()} == set(hashes)
    assert base.for_portfolio("desk-a-1").cooldown_after_loss_s == D("60")


def test_a_portfolio_table_with_an_unknown_or_invalid_setting_stops_start_up(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[portfolios."desk-*"]\ncooldown_after_los_s = 60\n')
    with pytest.raises(ConfigError, match=r"portfolios.desk-\*.cooldown_after_los_s: not a known setting; "
                                          r"did you mean cooldown_after_loss_s\?"):
        load_config(config_file=bad)
    bad.write_text('[portfolios."desk-*"]\nloss_guard_count = 2\n')
    with pytest.raises(ConfigError, match="loss_guard_count, loss_guard_window_s and loss_guard_pause_s"):
        load_config(config_file=bad)


def test_portfolio_tables_in_a_file_beside_a_sizing_table_are_read(tmp_path):
    path = tmp_path / "desks.toml"
    path.write_text('[sizing]\nportfolio_cap = "4000"\n\n[portfolios."desk-b"]\nportfolio_cap = "2%"\n')
    config = load_config(config_file=path)
    assert str(config.portfolio_cap) == "4000"
    assert str(config.for_portfolio("desk-b").portfolio_cap) == "2%"
    assert config.for_portfolio("desk-c") is config


def test_per_portfolio_starting_equity_is_each_portfolios_own():
    proc = processor(conviction(portfolios={"big": {"starting_equity": "500000"}}))
    assert proc.store.load("big").streak.equity == D("500000")
    assert proc.store.load("small").streak.equity == D("100000")


def test_only_a_reduce_passes_a_reduce_only_halt_and_nothing_passes_a_full_one():
    from types import SimpleNamespace

    from streams.engine.protections import passes_halt
    from streams.wire.models import Signal, validate

    open_ = validate(Signal, signal("p1", "ETH", "1", "100")["value"])
    exit_ = validate(Signal, reduce("p1", "ETH", "100", "sell")["value"])
    reduce_only, full, latch = (SimpleNamespace(reason=r) for r in ("REDUCE_ONLY", "HALTED", "MAX_DRAWDOWN"))
    assert passes_halt(exit_, reduce_only) and not passes_halt(open_, reduce_only)
    assert not passes_halt(exit_, full) and not passes_halt(exit_, latch)


def test_a_reduce_of_less_than_one_step_is_nothing_to_reduce():
    proc = processor(conviction())
    feed(proc, [ETH, filled("p1", "external", "ETH", "0.0015", "100")])
    result, = feed(proc, [reduce("p1", "ETH", "100", "sell", fraction="0.5", ts=T0 + 1)])
    assert result.decision.reason == "NOTHING_TO_REDUCE"
    assert result.decision.trace["detail"].startswith("symbol=ETH held_qty=0.0015: less than one step to reduce")


def test_the_audit_resolves_every_portfolios_configuration_from_what_the_worker_publishes():
    from streams.history.audit import ConfigResolver
    from streams.kafka.io import Record
    from streams.wire import decimals

    base = conviction(portfolios={"desk-*": {"portfolio_cap": "3000"}, "*-b": {"cooldown_after_loss_s": "60"},
                                  "desk-a": {"portfolio_cap": "700"}})
    published = [Record("config", 0, offset, c.config_hash.encode(),
                        decimals.dumps({"config_hash": c.config_hash, "config": c.effective()}).encode(), (), 0)
                 for offset, c in enumerate(base.effective_configurations())]
    resolver = ConfigResolver(published)

    for portfolio in ("desk-a", "desk-b", "desk-c", "ops-b", "other"):
        wanted = base.for_portfolio(portfolio)
        found = resolver(wanted.config_hash, portfolio)
        assert found is not None and found.effective() == wanted.effective(), portfolio
    # desk-b matches two globs at once: no record holds it, it is derived from the tables
    assert base.for_portfolio("desk-b").config_hash not in {c.config_hash for c in base.effective_configurations()}
    assert resolver("0000000000000000", "desk-b") is None and resolver.unresolvable == {"0000000000000000"}


def test_a_portfolio_table_registers_the_ids_it_names():
    config = conviction(portfolios={"desk-a-*": {"portfolio_cap": "1500"}, "ops": {}})
    assert config.configures("desk-a-7") and config.configures("ops")
    assert not config.configures("desk-b-1") and not conviction().configures("ops")
