"""Data contracts: the JSON Schema (draft 2020-12) of every message the product
reads or writes, generated from the pydantic models in `streams.wire.models` and
checked in under `topics/schemas/v<VERSION>/` (a test fails when the models and
the files differ).

Inputs (instruments, signals, fills, controls) are described as the worker
accepts them (a decimal as a JSON-number string or a JSON number, `ts` as RFC
3339 or epoch milliseconds); outputs (orders, decisions with their `trace`) as
it writes them (decimals as strings, `ts` as RFC 3339 UTC). Regenerate after
changing a model:

    python -m streams.wire.schemas --write

and raise `VERSION` (a new folder) when the change is not backward compatible
for the readers of a topic.

The schemas are the contract: a value is valid by its schema exactly when the
worker admits it (tests/unit/test_schema_contract.py, both directions). Each
bound is declared once, on the model's field type, and makes both the validator
and the schema (`models.WireDecimal`, `models.WireTime`, `models.Id`):

- A decimal's magnitude and places cannot be bounded by a regular expression
  while its text may carry any exponent (the digits can always outnumber it).
  Of the two ways, the worker's rule was made one on the text: a decimal string
  with an exponent is in scientific notation (one digit before the point, the
  exponent from -18 to 15, as Python's `Decimal` and Java's `BigDecimal` write
  it), still JSON number grammar, still read without float, and refused where
  it was accepted only for "10e3"-like forms and for a zero with an exponent
  out of that range. `decimals.decimal_pattern` states the rule exactly, with
  the field's range (> 0, >= 0, <= 1) folded in. A decimal sent as a JSON
  number is bounded by `minimum`/`maximum` and `multipleOf` 1e-18, exact in
  JSON Schema's arithmetic (numbers are decimals there; a validator that reads
  them as binary floats is approximate on the last digits).
- A time's pattern states the calendar (leap years), the clock and the offset
  exactly; that the instant stays within 1970..9999 cannot be (a pattern cannot
  add an offset), so the worker's rule was tightened on the text there too: on
  1970-01-01 no offset east of UTC, on 9999-12-31 none west, no date written
  before 1970, and `T` (or `t`) between date and time, as RFC 3339's grammar
  says (a space, which its note allows, would fail `format: date-time`).
- A pattern anchored with `$` comes with `"not": {"pattern": "\\n"}`: in
  Python's and Java's dialects `$` also matches before a final newline.
- One rule stays beyond JSON Schema: no two legs of an instrument share a
  `venue_symbol` (said in the schema's description).

Version 2: narrower than version 1, which took what the worker dead-letters
(`"price": "0"`, `"score": "5"`, `"price": "1e20"`) and had no trace schema.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter

from streams.wire import models

VERSION = 2
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "topics" / "schemas" / f"v{VERSION}"

# file name -> (model, topic, direction)
MESSAGES: dict[str, tuple[Any, str, Literal["validation", "serialization"]]] = {
    "instrument": (models.Instrument, "instruments", "validation"),
    "signal": (models.Signal, "signals", "validation"),
    "fill": (models.Fill, "fills", "validation"),
    "control": (models.Control, "controls", "validation"),
    "order": (models.Order, "orders", "serialization"),
    "decision": (models.Decision, "decisions", "serialization"),
}


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema of message `name` (a key of MESSAGES)."""
    model, topic, mode = MESSAGES[name]
    generated = TypeAdapter(model).json_schema(mode=mode)
    direction = "read by the worker from" if mode == "validation" else "written by the worker to"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:sizer:schema:v{VERSION}:{name}",
        "title": f"sizer {name} v{VERSION}",
        "description": f"A {name} message as {direction} the `{topic}` topic (JSON, UTF-8). Generated from "
                       f"streams/wire/models.py by `python -m streams.wire.schemas --write`; do not edit.",
        **{key: value for key, value in generated.items() if key != "title"},
    }


def render(name: str) -> str:
    return json.dumps(schema(name), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def path(name: str) -> Path:
    return SCHEMA_DIR / f"{name}.schema.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.wire.schemas", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the files (default: check them)")
    args = parser.parse_args(argv)
    stale = []
    for name in MESSAGES:
        text = render(name)
        if args.write:
            path(name).parent.mkdir(parents=True, exist_ok=True)
            path(name).write_text(text)
        elif not path(name).exists() or path(name).read_text() != text:
            stale.append(str(path(name)))
    if stale:
        print("out of date (run python -m streams.wire.schemas --write): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
