"""The configurations of a sweep: a policy (preset) and a point of a grid of
settings over it.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from pydantic import ValidationError

from streams.config import PRESETS, SizingConfig, load_config
from streams.errors import ConfigError, field_errors


POLICIES = ("static", "conviction", "graduated")


@dataclass(frozen=True)
class Configuration:
    """One configuration of a sweep: the policy it starts from and the grid point on it."""

    label: str
    policy: str
    params: tuple[tuple[str, str], ...]
    config: SizingConfig


def policy_config(spec: str, option: str = "--policy") -> tuple[str, SizingConfig]:
    """`static` (the conviction preset with sizing disabled: the per-pair maximum for
    every signal), `conviction`, `graduated`, or a TOML config file: (name, config).
    Presets take `SIZING_*` from the environment like every other command. `option`:
    the command-line option that named it, for the error."""
    if spec == "static":
        base = load_config("conviction")
        return "static", with_values(base, {"enabled": False})
    if spec in PRESETS:
        return spec, load_config(spec)
    if os.path.exists(spec):
        return os.path.splitext(os.path.basename(spec))[0], load_config(config_file=spec)
    raise ConfigError(f"{option}: must be one of {', '.join(POLICIES)} or a TOML config file, got {spec!r}")


def with_values(config: SizingConfig, values: dict[str, Any]) -> SizingConfig:
    """`config` with some fields replaced, validated as a whole (unknown names are errors)."""
    return SizingConfig.from_effective({**config.effective(), **values})


def parse_grid(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
    """`--set name=v1,v2,...` options as (name, values), in the order given."""
    grid: list[tuple[str, list[str]]] = []
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip()
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not name or not items:
            raise ConfigError(f"--set: expected name=value[,value...], got {spec!r}")
        if name in (n for n, _ in grid):
            raise ConfigError(f"--set: {name} given twice")
        if len(set(items)) != len(items):
            raise ConfigError(f"--set: {name} repeats a value")
        grid.append((name, items))
    return grid


def configurations(bases: Sequence[tuple[str, SizingConfig]], grid: Sequence[tuple[str, list[str]]]
                   ) -> list[Configuration]:
    """Every base (policy) at every grid point, in the order given."""
    result: list[Configuration] = []
    names = [name for name, _ in grid]
    for policy, base in bases:
        for point in itertools.product(*(values for _, values in grid)):
            params = tuple(zip(names, point))
            try:
                config = with_values(base, dict(params)) if params else base
            except ConfigError as exc:
                # one line, naming the values given (not "recorded configuration", from_effective's word)
                cause = exc.__cause__
                problems = "; ".join(f"{name}: {rule}" for name, rule, _ in field_errors(cause, "config")) \
                    if isinstance(cause, ValidationError) else str(exc)
                raise ConfigError(f"--set {' '.join(f'{n}={v}' for n, v in params)} on {policy}: {problems}") from exc
            label = " ".join([policy, *(f"{n}={v}" for n, v in params)])
            result.append(Configuration(label, policy, params, config))
    labels = Counter(c.label for c in result)
    repeated = [label for label, n in labels.items() if n > 1]
    if repeated:
        raise ConfigError(f"--policy: {repeated[0]!r} given twice")
    return result
