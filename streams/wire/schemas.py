"""Data contracts: the JSON Schema (draft 2020-12) of every message the product
reads or writes, generated from the pydantic models in `streams.wire.models` and
checked in under `topics/schemas/v<VERSION>/` (a test fails when the models and
the files differ).

Inputs (instruments, signals, fills, controls) are described as the worker
accepts them (a decimal as a JSON-number string or a JSON number, `ts` as RFC
3339 or epoch milliseconds); outputs (orders, decisions) as it writes them
(decimals as strings, `ts` as RFC 3339 UTC). Regenerate after changing a model:

    python -m streams.wire.schemas --write

and raise `VERSION` (a new folder) when the change is not backward compatible
for the readers of a topic.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter

from streams.wire import models

VERSION = 1
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
