import os
from pathlib import Path

import pytest

from streams.config import load_config
from streams.errors import ConfigError


def test_presets_carry_the_documented_defaults():
    conviction = load_config("conviction")
    graduated = load_config("graduated")

    assert (conviction.conviction, conviction.base, conviction.cap_mode) == ("linear", "fixed", "shrink")
    assert str(conviction.min_fraction) == "0.3" and conviction.max_fraction == 1
    assert conviction.pair_max_usd == 1000 and conviction.pair_cap == 1000
    assert conviction.portfolio_cap.amount(0) == 5000
    assert (graduated.conviction, graduated.base, graduated.cap_mode) == ("tiers", "graduated", "skip")
    assert graduated.drawdown and graduated.starting_equity == 100_000
    assert graduated.pair_cap is None
    assert graduated.portfolio_cap.amount(graduated.starting_equity) == 1000


def test_config_hash_is_stable_and_follows_every_setting(monkeypatch):
    first = load_config("conviction").config_hash
    assert load_config("conviction").config_hash == first
    monkeypatch.setenv("SIZING_PAIR_MAX_USD", "1001")
    assert load_config("conviction").config_hash != first


def test_environment_overrides_the_file_which_overrides_the_preset(tmp_path: Path, monkeypatch):
    path = tmp_path / "sizing.toml"
    path.write_text('preset = "graduated"\nportfolio_cap = "2%"\nstarting_equity = "50000"\n')
    monkeypatch.setenv("SIZING_STARTING_EQUITY", "40000")

    config = load_config(config_file=path)

    assert config.preset == "graduated"
    assert config.portfolio_cap.amount(config.starting_equity) == 800
    assert config.starting_equity == 40000


@pytest.mark.parametrize(
    ("env", "field", "rule"),
    [
        ({"SIZING_MIN_FRACTION": "1.2"}, "min_fraction", "less than or equal to 1"),
        ({"SIZING_MIN_FRACTION": "0.8", "SIZING_MAX_FRACTION": "0.5"}, "config", "min_fraction must be <= max_fraction"),
        ({"SIZING_PORTFOLIO_CAP": "0"}, "portfolio_cap.usd", "greater than 0"),
        ({"SIZING_PORTFOLIO_CAP": "-1%"}, "portfolio_cap.equity_pct", "greater than 0"),
        ({"SIZING_PAIR_MAX_USD": "-5"}, "pair_max_usd", "greater than 0"),
        ({"SIZING_TIERS": '[{"min_score":"0.5","multiplier":"1"},{"min_score":"0.7","multiplier":"0.5"}]'},
         "tiers", "ordered by min_score"),
        ({"SIZING_PHASES": '[{"equity_pct":"0.01"},{"equity_pct":"0.005","min_trades":20}]'},
         "phases", "ascending"),
        ({"SIZING_CAP_MODE": "clip"}, "cap_mode", "'shrink' or 'skip'"),
    ],
)
def test_bad_configuration_names_the_field_and_the_rule(monkeypatch, env, field, rule):
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    with pytest.raises(ConfigError) as raised:
        load_config("graduated")

    message = str(raised.value)
    assert f"{field}:" in message
    assert rule in message


def test_unknown_preset_and_missing_file_are_config_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="preset: must be one of conviction, graduated"):
        load_config("aggressive")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(config_file=tmp_path / "absent.toml")


def test_unknown_setting_in_the_file_is_rejected_naming_the_closest_known_one(tmp_path: Path):
    path = tmp_path / "sizing.toml"
    path.write_text('pair_max = "1000"\nportfolio_capp = "1%"\nzzz = 1\n')
    with pytest.raises(ConfigError) as refused:
        load_config(config_file=path)
    assert str(refused.value).splitlines() == [
        f"unknown keys in config file {path}:",
        "  pair_max: not a known setting; did you mean pair_max_usd?",
        "  portfolio_capp: not a known setting; did you mean portfolio_cap?",
        "  zzz: not a known setting",
    ]


def test_unknown_setting_under_the_sizing_table_is_rejected_too(tmp_path: Path):
    path = tmp_path / "sizing.toml"
    path.write_text('[sizing]\ncap_mod = "skip"\n')
    with pytest.raises(ConfigError, match="cap_mod: not a known setting; did you mean cap_mode"):
        load_config(config_file=path)


def test_a_preset_flag_that_contradicts_the_environment_is_an_error(monkeypatch):
    monkeypatch.setenv("SIZING_PRESET", "conviction")
    with pytest.raises(ConfigError, match="preset: --preset graduated conflicts with SIZING_PRESET=conviction"):
        load_config("graduated")
    assert load_config().preset == "conviction"
    assert load_config("conviction").base == "fixed"


@pytest.mark.parametrize("preset", ["conviction", "graduated"])
def test_the_shipped_example_sizing_toml_is_its_preset_written_out(preset, monkeypatch):

    for variable in [v for v in os.environ if v.startswith("SIZING_")]:
        monkeypatch.delenv(variable)
    example = Path(__file__).resolve().parents[2] / "deploy" / "sizing" / f"{preset}.toml"
    from_file = load_config(config_file=example)
    assert from_file.config_hash == load_config(preset).config_hash
    assert from_file.effective() == load_config(preset).effective()


@pytest.mark.parametrize("env, names", [
    # the example: a 10 s age and TTL with the default 60 s skew
    ({"SIZING_MAX_SIGNAL_AGE_S": "10", "SIZING_RESERVATION_TTL_S": "10"},
     "max_signal_age_s (10) must be at least max_future_skew_s (60)"),
    ({"SIZING_MAX_SIGNAL_AGE_S": "30", "SIZING_MAX_FUTURE_SKEW_S": "30.5"},
     "max_signal_age_s (30) must be at least max_future_skew_s (30.5)"),
    ({"SIZING_MAX_SIGNAL_AGE_S": "60", "SIZING_RESERVATION_TTL_S": "119.999"},
     "reservation_ttl_s (119.999) must be unset or at least max_signal_age_s + max_future_skew_s (60 + 60 = 120)"),
])
def test_clock_settings_that_contradict_each_other_are_refused_naming_the_settings_and_the_rule(monkeypatch, env, names):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        load_config("conviction")
    assert names in str(raised.value)


def test_a_ttl_without_a_signal_age_must_still_outlast_the_skew():
    from pydantic import ValidationError

    from streams.config import SizingConfig
    with pytest.raises(ValidationError, match=r"reservation_ttl_s \(59\) must be unset or at least "
                                              r"max_future_skew_s \(60\)"):
        SizingConfig(max_signal_age_s=None, reservation_ttl_s="59")


def test_clock_settings_exactly_at_the_rules_are_accepted(monkeypatch):
    monkeypatch.setenv("SIZING_MAX_SIGNAL_AGE_S", "60")
    monkeypatch.setenv("SIZING_RESERVATION_TTL_S", "120")
    config = load_config("conviction")
    assert (config.max_signal_age_s, config.max_future_skew_s, config.reservation_ttl_s) == (60, 60, 120)
