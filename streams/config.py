"""Sizing configuration: one typed, validated, frozen object built at start-up.

Sources, later ones winning: the preset's defaults, the TOML config file, then
environment variables with prefix `SIZING_` (nested fields with `__`, lists as
JSON). A stable hash of the effective configuration is stamped on every order
and decision.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from fnmatch import fnmatchcase
from decimal import ROUND_CEILING, Decimal
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from streams.wire import decimals
from streams.errors import ConfigError, field_errors, read_toml
from streams.wire.models import Dec

PresetName = Literal["conviction", "graduated"]
Fraction = Annotated[Dec, Field(ge=0, le=1)]
Positive = Annotated[Dec, Field(gt=0)]


class Tier(BaseModel):
    """A conviction tier: scores at or above `min_score` (strictly above when
    `strict`) get `multiplier`. Tiers are listed from the highest threshold down."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_score: Fraction
    multiplier: Annotated[Dec, Field(gt=0, le=1)]
    strict: bool = False

    def admits(self, score: Decimal) -> bool:
        return score > self.min_score if self.strict else score >= self.min_score


class Phase(BaseModel):
    """A graduated phase: base size is `equity_pct` of equity. A portfolio is
    promoted into it once it has at least `min_trades` closed trades, a win rate
    above `min_win_rate` and a profit factor above `min_profit_factor`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    equity_pct: Annotated[Dec, Field(gt=0, le=1)]
    min_trades: Annotated[int, Field(ge=0)] = 0
    min_win_rate: Fraction = Decimal(0)
    min_profit_factor: Annotated[Dec, Field(ge=0)] = Decimal(0)


class CapSpec(BaseModel):
    """A portfolio exposure cap: absolute USD (`"5000"`) or a percentage of equity (`"1%"`)."""

    model_config = ConfigDict(frozen=True)

    usd: Positive | None = None
    equity_pct: Annotated[Dec, Field(gt=0, le=1)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, (str, int, Decimal)) and not isinstance(value, bool):
            text = str(value).strip()
            if text.endswith("%"):
                return {"equity_pct": decimals.to_decimal(text[:-1]) / 100}
            return {"usd": decimals.to_decimal(text)}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> "CapSpec":
        if (self.usd is None) == (self.equity_pct is None):
            raise ValueError('give the cap as USD ("5000") or a percentage of equity ("1%")')
        return self

    def amount(self, equity: Decimal) -> Decimal:
        """The cap in USD for the given equity."""
        return self.usd if self.usd is not None else equity * self.equity_pct

    def __str__(self) -> str:
        if self.usd is not None:
            return decimals.canonical(self.usd)
        return decimals.canonical(self.equity_pct * 100) + "%"


DEFAULT_TIERS = (
    Tier(min_score=Decimal("0.85"), multiplier=Decimal("1.0"), strict=True),
    Tier(min_score=Decimal("0.60"), multiplier=Decimal("0.75")),
)
DEFAULT_PHASES = (
    Phase(equity_pct=Decimal("0.001")),
    Phase(equity_pct=Decimal("0.0025"), min_trades=20, min_win_rate=Decimal("0.55"),
          min_profit_factor=Decimal("1.2")),
    Phase(equity_pct=Decimal("0.005"), min_trades=50, min_win_rate=Decimal("0.58"),
          min_profit_factor=Decimal("1.5")),
)


class SizingConfig(BaseSettings):
    """Everything that decides a size. Field docs are the configuration reference."""

    model_config = SettingsConfigDict(
        env_prefix="SIZING_", env_nested_delimiter="__", frozen=True, extra="forbid",
        case_sensitive=False,
    )

    preset: PresetName = "conviction"
    enabled: bool = True
    """false: every known, fresh signal gets the static per-pair maximum (caps and exchange rules still apply)."""

    conviction: Literal["linear", "tiers"] = "linear"
    min_fraction: Fraction = Decimal("0.3")
    max_fraction: Fraction = Decimal("1.0")
    min_score: Fraction | None = None
    tiers: tuple[Tier, ...] = DEFAULT_TIERS

    base: Literal["fixed", "graduated"] = "fixed"
    pair_max_usd: Positive = Decimal("1000")
    starting_equity: Positive = Decimal("100000")
    phases: tuple[Phase, ...] = DEFAULT_PHASES

    drawdown: bool = False
    loss_streak: Annotated[int, Field(ge=1)] = 2
    drawdown_cut: Annotated[Dec, Field(gt=0, le=1)] = Decimal("0.5")
    recovery_streak: Annotated[int, Field(ge=1)] = 2

    pair_cap_usd: Positive | None = None
    portfolio_cap: Annotated[CapSpec, NoDecode] = CapSpec(usd=Decimal("5000"))
    cap_mode: Literal["shrink", "skip"] = "shrink"
    exposure_basis: Literal["entry", "mark"] = "entry"

    max_signal_age_s: Annotated[Dec, Field(ge=Decimal("0.001"))] | None = Decimal("300")
    """A signal older than this (event time, against the portfolio's clock) is STALE_SIGNAL; unset: never."""
    max_future_skew_s: Annotated[Dec, Field(ge=Decimal("0.001"))] = Decimal("60")
    """An input stamped more than this ahead of its Kafka record timestamp is dead-lettered FUTURE_TIMESTAMP."""
    reservation_ttl_s: Annotated[Dec, Field(ge=1)] | None = None
    """Unset: a reservation lives until its order is filled (final), canceled or released.
    Set: it lapses this long after it was made, on the portfolio clock (at least `max_signal_age_s`)."""
    max_drawdown_pct: Annotated[Dec, Field(gt=0, lt=100)] | None = None
    """Unset: off. Set: a portfolio whose equity falls this many percent below its peak
    halts itself (MAX_DRAWDOWN) until an operator resumes it."""
    max_hedge_residual_pct: Annotated[Dec, Field(gt=0, le=100)] | None = Decimal("5")
    """An inverse leg's contracts round down: the base quantity they leave unhedged,
    in quote notional, above this percentage of the order's notional is HEDGE_MISMATCH;
    unset: never (the residual is still in the trace)."""
    unscored_signals: Literal["static", "reject"] = "static"
    """A signal without a score: `static` sizes it with conviction multiplier 1; `reject` is NO_SCORE."""
    signal_dedupe_window: Annotated[int, Field(ge=1, le=1_000_000)] = 1024
    fill_dedupe_window: Annotated[int, Field(ge=1, le=1_000_000)] = 1024

    # Protections (DESIGN.md, "Protections"): each off while unset, all in event time.
    cooldown_after_loss_s: Annotated[Dec, Field(ge=Decimal("0.001"))] | None = None
    """After a losing close of a symbol, its opens are COOLDOWN until the portfolio clock reaches close + this."""
    loss_guard_count: Annotated[int, Field(ge=1)] | None = None
    """This many losing closes within `loss_guard_window_s` pause every open (LOSS_GUARD) for `loss_guard_pause_s`."""
    loss_guard_window_s: Annotated[Dec, Field(ge=Decimal("0.001"))] | None = None
    loss_guard_pause_s: Annotated[Dec, Field(ge=Decimal("0.001"))] | None = None
    max_orders_per_window: Annotated[int, Field(ge=1)] | None = None
    """At most this many accepted opens per `order_rate_window_s` of portfolio clock; beyond it RATE_LIMITED."""
    order_rate_window_s: Annotated[Dec, Field(ge=Decimal("0.001"))] | None = None
    group_caps: Annotated[dict[str, CapSpec], NoDecode] = {}
    """Group (an instrument's `group`) -> exposure cap of all its symbols, USD or % of equity: GROUP_CAP_REACHED."""

    portfolios: Annotated[dict[str, dict[str, Any]], NoDecode] = {}
    """Per-portfolio settings: an exact portfolio id or a glob (`desk-a-*`) -> the settings it overrides.
    The most specific match wins (an exact id over any glob, then the glob with more literal
    characters); each portfolio decides under its own effective configuration (`for_portfolio`)."""

    @field_validator("group_caps", "portfolios", mode="before")
    @classmethod
    def _table_from_json(cls, value: Any) -> Any:
        # a SIZING_GROUP_CAPS / SIZING_PORTFOLIOS variable holds JSON
        if isinstance(value, str):
            try:
                return decimals.loads(value)
            except ValueError as exc:
                raise ValueError(f"not a JSON table: {exc}") from None
        return value

    @model_validator(mode="after")
    def _protections_whole(self) -> "SizingConfig":
        guard = (self.loss_guard_count, self.loss_guard_window_s, self.loss_guard_pause_s)
        if any(v is not None for v in guard) and any(v is None for v in guard):
            raise ValueError("loss_guard_count, loss_guard_window_s and loss_guard_pause_s are set together "
                             "or not at all")
        rate = (self.max_orders_per_window, self.order_rate_window_s)
        if (rate[0] is None) != (rate[1] is None):
            raise ValueError("max_orders_per_window and order_rate_window_s are set together or not at all")
        return self

    @model_validator(mode="after")
    def _portfolio_tables_valid(self) -> "SizingConfig":
        # Every table, and every set of tables one portfolio id can match together, must
        # make a valid configuration: checked here, at start-up, not at the first signal.
        for pattern, overrides in self.portfolios.items():
            if not isinstance(overrides, dict):
                raise ValueError(f"portfolios.{pattern}: must be a table of settings")
            for key in overrides:
                if key in ("preset", "portfolios"):
                    raise ValueError(f"portfolios.{pattern}.{key}: cannot be set per portfolio")
                if key == "max_future_skew_s":
                    # admission judges every input before its portfolio's table applies, and
                    # the value bounds the input topics' record timestamps: a portfolio's own
                    # skew would pass the clock rules that the skew in force breaks
                    raise ValueError(f"portfolios.{pattern}.{key}: cannot be set per portfolio: one value bounds "
                                     f"every input's event time at admission (and the input topics' record "
                                     f"timestamps); the clock rules of each portfolio are checked against it")
                if key not in type(self).model_fields:
                    closest = difflib.get_close_matches(key, type(self).model_fields, n=1, cutoff=0.6)
                    hint = f"; did you mean {closest[0]}?" if closest else ""
                    raise ValueError(f"portfolios.{pattern}.{key}: not a known setting{hint}")
            try:
                self.for_portfolio(_example_id(pattern))
            except ConfigError as exc:
                rules = "; ".join(line.strip() for line in str(exc).splitlines()[1:])
                raise ValueError(f"portfolios.{pattern}: {rules}") from None
        sets = co_matching(tuple(self.portfolios))
        never = [pattern for pattern in self.portfolios if not any(pattern in together for together in sets)]
        if never:
            raise ValueError(f"portfolios.{never[0]!r}: matches no portfolio id (1 to 256 characters, no control "
                             f"characters)")
        for together, portfolio_id in sets.items():
            try:
                self.for_portfolio(portfolio_id)
            except ConfigError as exc:
                rules = "; ".join(line.strip() for line in str(exc).splitlines()[1:])
                tables = " and ".join(f"portfolios.{pattern}" for pattern in together)
                as_for = ", together" if len(together) > 1 else ""
                raise ValueError(f"{tables}{as_for} (as for portfolio {portfolio_id!r}): {rules}") from None
        return self

    @field_validator("tiers")
    @classmethod
    def _tiers_ordered(cls, tiers: tuple[Tier, ...]) -> tuple[Tier, ...]:
        if not tiers:
            raise ValueError("at least one tier is required")
        for higher, lower in zip(tiers, tiers[1:]):
            if lower.min_score >= higher.min_score:
                raise ValueError("tiers must be ordered by min_score, highest first, without repeats")
            if lower.multiplier > higher.multiplier:
                raise ValueError("a lower tier must not have a larger multiplier than a higher one")
        return tiers

    @field_validator("phases")
    @classmethod
    def _phases_ascending(cls, phases: tuple[Phase, ...]) -> tuple[Phase, ...]:
        if not phases:
            raise ValueError("at least one phase is required")
        for before, after in zip(phases, phases[1:]):
            if after.equity_pct <= before.equity_pct:
                raise ValueError("phases must be ascending: equity_pct must rise from phase to phase")
            if after.min_trades < before.min_trades:
                raise ValueError("phases must be ascending: min_trades must not fall from phase to phase")
        return phases

    @model_validator(mode="after")
    def _fractions_ordered(self) -> "SizingConfig":
        if self.min_fraction > self.max_fraction:
            raise ValueError("min_fraction must be <= max_fraction")
        return self

    @model_validator(mode="after")
    def _clock_rules(self) -> "SizingConfig":
        # The clock rules (DESIGN.md, "Configuration"): an input inside the allowed
        # future skew moves the portfolio clock up to `max_future_skew_s` ahead, and
        # that must never make an on-time signal stale or lapse a reservation early.
        c = decimals.canonical
        ttl, age, skew = self.reservation_ttl_s, self.max_signal_age_s, self.max_future_skew_s
        if age is not None and age < skew:
            raise ValueError(
                f"max_signal_age_s ({c(age)}) must be at least max_future_skew_s ({c(skew)}): an input stamped "
                f"within the allowed skew would make an on-time signal STALE_SIGNAL")
        if ttl is not None and age is not None and ttl < age + skew:
            raise ValueError(
                f"reservation_ttl_s ({c(ttl)}) must be unset or at least max_signal_age_s + max_future_skew_s "
                f"({c(age)} + {c(skew)} = {c(age + skew)}): an input stamped within the allowed skew would "
                f"lapse a reservation while a signal of its age is still being sized")
        if ttl is not None and age is None and ttl < skew:
            raise ValueError(
                f"reservation_ttl_s ({c(ttl)}) must be unset or at least max_future_skew_s ({c(skew)}): an input "
                f"stamped within the allowed skew would lapse a reservation at once")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the config file and the preset (both arrive as init kwargs).
        return env_settings, init_settings

    @cached_property
    def pair_cap(self) -> Decimal | None:
        """The per-pair exposure cap: explicit, else the per-pair maximum in `fixed` mode, else none."""
        if self.pair_cap_usd is not None:
            return self.pair_cap_usd
        return self.pair_max_usd if self.base == "fixed" else None

    def pair_cap_origin(self, sources: Mapping[str, str]) -> str:
        """Where `pair_cap` comes from, in words, given each setting's source (`load_config`):
        the setting itself when set, else what it is derived from."""
        if self.pair_cap_usd is not None:
            return sources.get("pair_cap_usd", "set")
        if self.base == "fixed":
            return f"derived: pair_max_usd ({sources.get('pair_max_usd', 'set')}), as base is fixed"
        return f"derived: no per-pair cap, as base is {self.base} ({sources.get('base', 'set')})"

    @cached_property
    def max_signal_age_ms(self) -> int | None:
        return None if self.max_signal_age_s is None else int(self.max_signal_age_s * 1000)

    @cached_property
    def reservation_ttl_ms(self) -> int | None:
        """None: reservations never lapse on their own."""
        return None if self.reservation_ttl_s is None else int(self.reservation_ttl_s * 1000)

    @cached_property
    def max_future_skew_ms(self) -> int:
        return int(self.max_future_skew_s * 1000)

    @cached_property
    def cooldown_ms(self) -> int | None:
        return None if self.cooldown_after_loss_s is None else _whole_ms(self.cooldown_after_loss_s)

    @cached_property
    def loss_guard_ms(self) -> tuple[int, int, int] | None:
        """(count, window ms, pause ms), or None: the loss guard is off."""
        if self.loss_guard_count is None or self.loss_guard_window_s is None or self.loss_guard_pause_s is None:
            return None
        return self.loss_guard_count, _whole_ms(self.loss_guard_window_s), _whole_ms(self.loss_guard_pause_s)

    @cached_property
    def order_rate_ms(self) -> tuple[int, int] | None:
        """(max accepted opens, window ms), or None: no order rate limit."""
        if self.max_orders_per_window is None or self.order_rate_window_s is None:
            return None
        return self.max_orders_per_window, _whole_ms(self.order_rate_window_s)

    @cached_property
    def open_protections(self) -> bool:
        """Whether any protection an open must pass is configured (cooldown, loss guard, order rate)."""
        return self.cooldown_ms is not None or self.loss_guard_ms is not None or self.order_rate_ms is not None

    def configures(self, portfolio_id: str) -> bool:
        """Whether a `[portfolios."ID"]` table (an exact id or a glob) names this portfolio:
        such a portfolio is registered by configuration (DESIGN.md, "Production Kafka")."""
        return any(fnmatchcase(portfolio_id, pattern) for pattern in self.portfolios)

    def for_portfolio(self, portfolio_id: str) -> "SizingConfig":
        """The effective configuration of one portfolio: this one with every matching
        `[portfolios."ID"]` table applied, least specific first (so the most specific
        wins), and no tables of its own. Itself when no table matches. Portfolio
        tables beat the preset, the file's other settings and `SIZING_*`.
        Raises ConfigError when the tables one id matches make an invalid configuration."""
        if not self.portfolios:
            return self
        cache = self.__dict__.setdefault("_per_portfolio", {})
        found = cache.get(portfolio_id)
        if found is not None:
            return found  # type: ignore[no-any-return]
        matching = tuple(sorted((p for p in self.portfolios if fnmatchcase(portfolio_id, p)), key=_specificity))
        layered = self.__dict__.setdefault("_layered", {})
        found = layered.get(matching)
        if found is None:
            if not matching:
                found = self
            else:
                data = self._plain()
                for pattern in matching:
                    data.update(self.portfolios[pattern])
                found = type(self).from_effective(data)
            layered[matching] = found
        if len(cache) >= 100_000:  # bounded: forgotten all at once past the bound
            cache.clear()
        cache[portfolio_id] = found
        return found

    def effective(self) -> dict[str, Any]:
        """The effective configuration as plain JSON data (Decimals as canonical strings;
        each portfolio table's values in the same canonical form)."""
        data = self._plain()
        tables = {}
        for pattern, overrides in self.portfolios.items():
            alone = type(self).from_effective({**data, **overrides})._plain()
            tables[pattern] = {key: alone[key] for key in overrides}
        data["portfolios"] = tables
        return data

    def _plain(self) -> dict[str, Any]:
        """`effective()` with no portfolio tables."""
        data = self.model_dump(mode="python", exclude={"portfolios"})
        data["portfolio_cap"] = str(self.portfolio_cap)
        data["group_caps"] = {group: str(cap) for group, cap in self.group_caps.items()}
        data["portfolios"] = {}
        return decimals.loads(decimals.dumps(data))

    def effective_configurations(self) -> list["SizingConfig"]:
        """This configuration and the effective configuration of a portfolio matching
        each `[portfolios."ID"]` table (as the config topic records them), without repeats."""
        found = {self.config_hash: self}
        for pattern in self.portfolios:
            config = self.for_portfolio(_example_id(pattern))
            found.setdefault(config.config_hash, config)
        return list(found.values())

    @classmethod
    def from_effective(cls, data: Mapping[str, Any]) -> "SizingConfig":
        """Rebuild a configuration from its effective form (as published and hashed),
        validated as usual but untouched by the environment of whoever reads it."""
        config = cls.__new__(cls)
        try:
            BaseModel.__init__(config, **data)
        except ValidationError as exc:
            raise ConfigError(_format_errors(exc, "recorded configuration")) from exc
        return config

    @cached_property
    def config_hash(self) -> str:
        """Stable hash of the effective configuration: same settings, same hash, on any machine."""
        canonical = decimals.dumps(_sorted(self.effective()))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class Settings:
    """One configuration as the engine reads it on every input: each setting and each
    value derived from them (`pair_cap`, the `*_ms` lengths, `config_hash`, ...) a
    plain attribute, read once from the `SizingConfig` (a pydantic model's attribute
    read costs about ten times a plain one's, and a decision makes some thirty).
    The values are the configuration's own, never computed here; nothing changes
    them. `for_portfolio` is `SizingConfig.for_portfolio`, each effective
    configuration's Settings made once."""

    def __init__(self, config: SizingConfig) -> None:
        self.__dict__.update({name: getattr(config, name) for name in _SETTINGS_READ})
        self.config = config
        self._effective: dict[str, Settings] = {}  # portfolio id -> its effective configuration's

    def for_portfolio(self, portfolio_id: str) -> "Settings":
        if not self.portfolios:
            return self
        found = self._effective.get(portfolio_id)
        if found is None:
            effective = self.config.for_portfolio(portfolio_id)
            found = self if effective is self.config else _settings_of(effective)
            if len(self._effective) >= 100_000:  # bounded as `SizingConfig.for_portfolio` is
                self._effective.clear()
            self._effective[portfolio_id] = found
        return found


# every field and every cached derived value of a configuration
_SETTINGS_READ = (*SizingConfig.model_fields,
                  *(name for name, value in vars(SizingConfig).items() if isinstance(value, cached_property)))


def _settings_of(config: SizingConfig) -> Settings:
    """The Settings of one configuration, made once (kept with it; a copy of the
    configuration, `model_copy`, copies it too, so it is checked to be this one's)."""
    found = config.__dict__.get("_settings")
    if found is None or found.config is not config:
        found = config.__dict__["_settings"] = Settings(config)
    return found  # type: ignore[no-any-return]


def settings(config: Any) -> Any:
    """What the engine reads a configuration through: a `SizingConfig`'s `Settings`
    (made once per configuration); anything else (a `Settings`, the sweep's reader
    that records what a run read) as it is."""
    return _settings_of(config) if isinstance(config, SizingConfig) else config


def _whole_ms(seconds: Decimal) -> int:
    """A protection's length in whole milliseconds, rounded up: event times are whole
    ms, so "clock < start + length" holds for exactly the same clocks (a length cut
    down to the ms below would end a cooldown or a window up to 1 ms early)."""
    return int((seconds * 1000).to_integral_value(rounding=ROUND_CEILING))


_GLOB = frozenset("*?[]")


def _specificity(pattern: str) -> tuple[bool, int, str]:
    """How specific a portfolio pattern is: an exact id beats any glob, then more
    literal characters beat fewer; ties in the pattern's own order (stable)."""
    return (not (_GLOB & set(pattern)), sum(ch not in _GLOB for ch in pattern), pattern)


def _example_id(pattern: str) -> str:
    """A portfolio id the pattern matches: its literal characters, `x` for `*` and
    `?`, and for a `[...]` set a character of it (outside it, for `[!...]`)."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        end = pattern.find("]", i + 2) if ch == "[" else -1
        if end != -1:
            inner = pattern[i + 1:end]
            if inner.startswith("!"):
                out.append(next(c for c in "x~_0" if c not in inner[1:]))
            else:
                out.append(inner[0])
            i = end + 1
            continue
        out.append("x" if ch in "*?" else ch)
        i += 1
    return "".join(out)


# How many sets of glob positions `co_matching` explores before it gives up.
CO_MATCHING_STATES = 20_000


@lru_cache(maxsize=64)
def co_matching(patterns: tuple[str, ...]) -> dict[tuple[str, ...], str]:
    """Every set of `[portfolios."ID"]` patterns that one portfolio id matches
    together and no other (a glob alone, or overlapping ones: "a*" and "*b" both
    match "ab"), each with the shortest such id. The globs run in step over an alphabet of
    their own characters and their neighbours (any other character is alike to them
    all); each set is what `fnmatchcase` says the id matches. Raises ValueError past
    CO_MATCHING_STATES (tables too many and too open to check every combination)."""
    globs = [_glob_tokens(p) for p in patterns]
    if all(kind == "lit" for g in globs for kind, _ in g):
        return {(p,): p for p in patterns if p}  # exact ids only: no id matches two of them
    start = tuple(_closure(g, {0}) for g in globs)
    alphabet = _id_alphabet(patterns)
    found: dict[tuple[str, ...], str] = {}
    seen = {start}
    frontier = [(start, "")]
    while frontier:
        following = []
        for state, text in frontier:
            for ch in alphabet:
                nxt = tuple(_closure(g, _advance(g, positions, ch)) for g, positions in zip(globs, state))
                if nxt in seen or not any(nxt):
                    continue
                seen.add(nxt)
                if len(seen) > CO_MATCHING_STATES:
                    raise ValueError(f"portfolios: more than {CO_MATCHING_STATES} combinations of glob positions; "
                                     f"too many overlapping glob tables to check each set one id matches")
                word = text + ch
                together = tuple(p for p in patterns if fnmatchcase(word, p))
                if together:
                    found.setdefault(together, word)
                if len(word) < 256:
                    following.append((nxt, word))
        frontier = following
    return found


def _glob_tokens(pattern: str) -> tuple[tuple[str, str], ...]:
    """A glob as fnmatch reads it: ("star", ""), ("any", ""), ("set", "[...]") or ("lit", ch)."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            tokens.append(("star", ""))
        elif ch == "?":
            tokens.append(("any", ""))
        elif ch == "[":
            j = i + 1 if i < n and pattern[i] == "!" else i
            j = j + 1 if j < n and pattern[j] == "]" else j
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                tokens.append(("lit", "["))
            else:
                tokens.append(("set", pattern[i - 1:j + 1]))
                i = j + 1
        else:
            tokens.append(("lit", ch))
    return tuple(tokens)


def _closure(tokens: tuple[tuple[str, str], ...], positions: set[int]) -> frozenset[int]:
    """Positions in a glob, with every `*` that may match nothing stepped over."""
    out = set(positions)
    for position in sorted(positions):
        while position < len(tokens) and tokens[position][0] == "star":
            position += 1
            out.add(position)
    return frozenset(out)


def _advance(tokens: tuple[tuple[str, str], ...], positions: frozenset[int], ch: str) -> set[int]:
    """The positions after one more character."""
    out = set()
    for position in positions:
        if position == len(tokens):
            continue
        kind, text = tokens[position]
        if kind == "star":
            out.add(position)
        elif kind == "any" or (kind == "lit" and text == ch) or (kind == "set" and fnmatchcase(ch, text)):
            out.add(position + 1)
    return out


def _id_alphabet(patterns: tuple[str, ...]) -> tuple[str, ...]:
    """One character of each class the patterns tell apart: their own characters, the
    ones next to them (a range's edges), and one they never name; only characters a
    portfolio id may hold (no control characters, no surrogates)."""
    named = {ord(ch) for pattern in patterns for ch in pattern} | {ord("x")}
    codes = {code + step for code in named for step in (-1, 0, 1)}
    return tuple(chr(code) for code in sorted(codes)
                 if 0x20 <= code < 0x110000 and code != 0x7F and not 0xD800 <= code <= 0xDFFF)


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


PRESETS: Mapping[str, Mapping[str, Any]] = {
    # Conviction scaling: score mapped linearly onto 30-100% of the per-pair maximum,
    # under an absolute portfolio cap; an order that would overshoot is shrunk.
    "conviction": {
        "preset": "conviction", "conviction": "linear", "base": "fixed",
        "min_fraction": "0.3", "max_fraction": "1.0", "pair_max_usd": "1000",
        "portfolio_cap": "5000", "cap_mode": "shrink", "drawdown": False, "unscored_signals": "static",
    },
    # Graduated scaling: a phase-based percentage of equity, confidence tiers,
    # halving after losing streaks, cap at 1% of equity; an overshooting signal is skipped.
    "graduated": {
        "preset": "graduated", "conviction": "tiers", "base": "graduated",
        "starting_equity": "100000", "portfolio_cap": "1%", "cap_mode": "skip",
        "drawdown": True, "loss_streak": 2, "drawdown_cut": "0.5", "recovery_streak": 2,
        "unscored_signals": "reject",
    },
}


def _format_errors(error: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    lines += [f"  {field}: {rule}" for field, rule, _ in field_errors(error, "config")]
    return "\n".join(lines)


def did_you_mean(name: str, known: Any, prefix: str = "") -> str:
    """`; did you mean PREFIX<closest>?` for the known name closest to a mistyped one
    (difflib), or nothing when none is close."""
    closest = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {prefix}{closest[0]}?" if closest else ""


def check_file_keys(values: Mapping[str, Any], path: Any) -> None:
    """Refuse a key of a TOML config file that names no setting (pydantic would say
    only "Extra inputs are not permitted"). Raises ConfigError naming each unknown
    key and the closest known one."""
    known = SizingConfig.model_fields
    problems = [f"  {key}: not a known setting{did_you_mean(key, known)}" for key in values if key not in known]
    if problems:
        raise ConfigError(f"unknown keys in config file {path}:\n" + "\n".join(problems))


def check_environment(prefix: str, model: type[BaseModel], environ: Mapping[str, str] | None = None) -> None:
    """Refuse a `prefix*` environment variable that names no field of `model`
    (a misspelled `SIZING_PORTFOLIO_CAPP` would otherwise be ignored and the
    default used). Nested fields may be set as `PREFIX_FIELD__SUB`.
    Raises ConfigError naming each unknown variable and the closest known one."""
    environ = os.environ if environ is None else environ
    known = {name.upper() for name in model.model_fields}
    problems = []
    for variable in sorted(environ):
        if not variable.upper().startswith(prefix):
            continue
        field = variable.upper()[len(prefix):].split("__")[0]
        if field in known:
            continue
        problems.append(f"  {variable}: not a known setting{did_you_mean(field, known, prefix)}")
    if problems:
        raise ConfigError("unknown environment variables:\n" + "\n".join(problems))


def load_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
) -> SizingConfig:
    """Build the effective configuration: preset defaults, then the TOML file, then `SIZING_*`.

    The preset is the `preset` argument, else `SIZING_PRESET`, else the file's
    `preset`, else `conviction`; an argument that contradicts `SIZING_PRESET` is an error. Raises ConfigError naming each bad field and its rule.
    """
    check_environment("SIZING_", SizingConfig)
    file_values: dict[str, Any] = {}
    if config_file is not None:
        raw = read_toml(config_file, "config file")
        file_values = raw.get("sizing", raw)
        if file_values is not raw and "portfolios" in raw:  # `[portfolios."ID"]` beside a `[sizing]` table
            file_values = {**file_values, "portfolios": raw["portfolios"]}
        check_file_keys(file_values, config_file)
    from_env = os.environ.get("SIZING_PRESET")
    if preset and from_env and preset != from_env:
        raise ConfigError(f"preset: --preset {preset} conflicts with SIZING_PRESET={from_env}; set one")
    name = preset or from_env or file_values.get("preset") or "conviction"
    if name not in PRESETS:
        raise ConfigError(f"preset: must be one of {', '.join(PRESETS)}, got {name!r}")
    values = {**PRESETS[name], **file_values, "preset": name}
    origin = f"preset {name}" + (f", file {config_file}" if config_file else "") + ", SIZING_* environment"
    from_environment = {variable.upper()[len("SIZING_"):].split("__")[0].lower(): variable
                        for variable in os.environ if variable.upper().startswith("SIZING_")}
    sources = {}
    for field in SizingConfig.model_fields:
        if field in from_environment:
            sources[field] = f"environment {from_environment[field]}"
        elif field in file_values:
            sources[field] = f"file {config_file}"
        elif field in PRESETS[name] or field == "preset":
            sources[field] = f"preset {name}"
        else:
            sources[field] = "default"
    try:
        config = SizingConfig(**values)
        # where each effective value came from, for `sizer config` (not a field: not hashed)
        config.__dict__["sources"] = sources
        return config
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from exc
    except SettingsError as exc:
        # A SIZING_* variable holding a list or table that is not valid JSON.
        raise ConfigError(f"invalid configuration ({origin}):\n  {exc}: {exc.__cause__}") from exc
