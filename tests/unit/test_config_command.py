"""`sizer config` shows the per-pair cap the engine applies, not only the setting as
given: DESIGN.md, "Caps": the per-pair cap defaults to the per-pair maximum in `fixed`
mode and is none in `graduated`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sizer(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("SIZER_", "KAFKA_", "SIZING_"))}
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**clean, **env})


def row(table: str, field: str) -> list[str]:
    """The cells of a setting's row in the table (split on runs of two spaces or more)."""
    line, = [line for line in table.splitlines() if line.startswith(field + " ")]
    return [cell.strip() for cell in line.split("  ") if cell.strip()]


def test_a_fixed_base_shows_the_pair_cap_it_derives_from_the_per_pair_maximum(tmp_path):
    config = tmp_path / "desk.toml"
    config.write_text('preset = "conviction"\npair_max_usd = "750"\n')

    done = sizer("config", "--config", str(config))

    assert done.returncode == 0, done.stderr
    field, value, origin = row(done.stdout, "pair_cap_usd")
    assert value == "750"
    assert origin == f"derived: pair_max_usd (file {config}), as base is fixed"


def test_a_graduated_base_shows_that_no_pair_cap_applies():
    done = sizer("config", "--preset", "graduated")

    assert done.returncode == 0, done.stderr
    assert row(done.stdout, "pair_cap_usd")[1:] == ["none", "derived: no per-pair cap, as base is graduated "
                                                             "(preset graduated)"]


def test_a_pair_cap_set_is_shown_with_its_source_and_json_carries_the_derived_value():
    done = sizer("config", "--preset", "graduated", SIZING_PAIR_CAP_USD="400")
    assert row(done.stdout, "pair_cap_usd")[1:] == ["400", "environment SIZING_PAIR_CAP_USD"]

    shown = json.loads(sizer("config", "--json", "--preset", "conviction").stdout)
    assert shown["config"]["pair_cap_usd"] is None  # the setting as given: what is hashed and published
    assert shown["derived"]["pair_cap_usd"] == {"value": "1000",
                                                "from": "derived: pair_max_usd (preset conviction), as base is fixed"}


def test_an_empty_table_or_prefix_is_said_not_left_as_a_blank_cell():
    done = sizer("config", "--preset", "conviction")

    assert row(done.stdout, "group_caps")[1:] == ["(none)", "default"]
    assert row(done.stdout, "portfolios")[1:] == ["(none)", "default"]
    assert row(done.stdout, "topic_prefix")[1:] == ["(none)", "default"]
    assert row(sizer("config", SIZER_TOPIC_PREFIX="desk-").stdout, "topic_prefix")[1:] == [
        "desk-", "environment SIZER_TOPIC_PREFIX"]
