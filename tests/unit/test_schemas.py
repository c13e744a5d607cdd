"""The checked-in JSON Schemas under topics/schemas/ are what the models generate,
and they describe the wire: what the product writes validates, bad input does not."""

from __future__ import annotations

import json

import jsonschema
import pytest

from streams.wire import schemas
from streams.config import load_config
from streams.engine import InputPosition
from streams.wire.models import Instrument, Signal, to_json, validate
from streams.processor import MemoryStore, Processor
from tests.builders import T0

FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(schemas.path(name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=FORMATS)


@pytest.mark.parametrize("name", sorted(schemas.MESSAGES))
def test_the_checked_in_schema_is_what_the_models_generate(name):
    assert schemas.path(name).read_text() == schemas.render(name), (
        f"{schemas.path(name)} is out of date: run python -m streams.wire.schemas --write")


def test_the_check_command_fails_on_a_stale_file(tmp_path, monkeypatch):
    monkeypatch.setattr(schemas, "SCHEMA_DIR", tmp_path)
    assert schemas.main([]) == 1
    assert schemas.main(["--write"]) == 0 and schemas.main([]) == 0


ETH = {"symbol": "ETH-USD", "legs": [{"venue_symbol": "ETHUSDT", "side": "buy", "qty_step": "0.001",
                                       "min_qty": "0.001", "max_qty": None, "min_notional": "5",
                                       "max_notional": "1000000"}]}
SIGNAL = {"signal_id": "s-1", "portfolio_id": "p1", "symbol": "ETH-USD", "side": "buy", "score": "0.9",
          "price": "2500", "ts": "2026-01-01T00:00:00Z"}


def test_inputs_in_both_time_forms_and_both_decimal_forms_are_valid():
    signals = validator("signal")
    for good in (SIGNAL, {**SIGNAL, "ts": T0}, {**SIGNAL, "price": 2500, "score": None}, {**SIGNAL, "price": "1E-8"},
                 {k: v for k, v in SIGNAL.items() if k != "score"}, {**SIGNAL, "ts": "2026-01-01T01:00:00+01:00"}):
        signals.validate(good)
        validate(Signal, good)  # the model agrees
    validator("instrument").validate(ETH)
    validator("fill").validate({"event_id": "f-1", "portfolio_id": "p1", "ts": T0, "type": "order_filled",
                                "order_id": "o-1", "symbol": "ETH-USD", "qty": "0.01", "price": "2500",
                                "final": True, "venue_symbol": "ETHUSDT"})
    validator("control").validate({"command_id": "c-1", "portfolio_id": "p1", "ts": T0, "type": "adjust_equity",
                                   "operator": "alice", "reason": "deposit", "amount": "-25000"})


@pytest.mark.parametrize("bad", [
    {"price": "1_00"}, {"price": " 1"}, {"price": "+1"}, {"price": "-5"}, {"price": -5}, {"score": 1.5},
    {"ts": T0 * 1000 * 1000}, {"ts": -1}, {"ts": "2026-01-01T00:00:00"}, {"ts": "0001-01-01T00:00:00Z"},
    {"side": "long"}, {"signal_id": ""}, {"price": 1e16},
])
def test_what_the_worker_dead_letters_is_invalid_by_the_schema_too(bad):
    errors = list(validator("signal").iter_errors({**SIGNAL, **bad}))
    assert errors, f"the schema accepts {bad}"


def test_the_orders_and_decisions_the_engine_writes_validate():
    processor = Processor(load_config("graduated"), MemoryStore(load_config("graduated")))
    processor.on_instrument(validate(Instrument, ETH))
    accepted = processor.on_signal(validate(Signal, SIGNAL), InputPosition("signals", 0, 0))
    rejected = processor.on_signal(validate(Signal, {**SIGNAL, "signal_id": "s-2", "score": "0.1"}),
                                   InputPosition("signals", 0, 1))
    validator("order").validate(json.loads(to_json(accepted.order)))
    for result in (accepted, rejected):
        decision = json.loads(to_json(result.decision))
        validator("decision").validate(decision)
    assert decision["trace"]["signal"]["ts"] == "2026-01-01T00:00:00.000Z"
    with pytest.raises(jsonschema.ValidationError):
        validator("order").validate({**json.loads(to_json(accepted.order)), "qty": 0.01})  # a float, not a string
