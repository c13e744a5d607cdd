"""What-if replay of Kafka history: the recorded interleaving under another
configuration, compared portfolio by portfolio with what was recorded."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

from streams.wire import decimals
from streams.config import SizingConfig
from streams.history.interleaving import Instruments, dead_lettered, recorded_interleaving, rederive
from streams.kafka.io import Record
from streams.text import counted
from streams.wire.models import parse_event_time, to_json


@dataclass
class Outcomes:
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    notional: Decimal = Decimal(0)
    highest_exposure: Decimal = Decimal(0)
    # (event time ms, exposure after the decision, cap at the decision) for plotting
    curve: list[tuple[int, Decimal, Decimal | None]] = field(default_factory=list)

    def add(self, decision: dict[str, Any]) -> None:
        trace = decision["trace"]
        if decision["outcome"] == "accepted":
            self.accepted += 1
            self.notional += Decimal(decision["notional"])
        else:
            self.rejected[decision["reason"]] += 1
        state = trace.get("state")
        if state is None:  # a duplicate: it read no state
            return
        after = Decimal(state["exposure"]) + Decimal(decision["notional"] or 0)
        self.highest_exposure = max(self.highest_exposure, after)
        cap = trace.get("caps", {}).get("portfolio_cap")
        self.curve.append((parse_event_time(trace["signal"]["ts"]), after, Decimal(cap) if cap is not None else None))

    def as_json(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rejected": dict(sorted(self.rejected.items())),
                "notional": decimals.canonical(self.notional),
                "highest_exposure": decimals.canonical(self.highest_exposure)}


@dataclass
class WhatIf:
    config_hash: str
    recorded: dict[str, Outcomes] = field(default_factory=lambda: defaultdict(Outcomes))
    what_if: dict[str, Outcomes] = field(default_factory=lambda: defaultdict(Outcomes))
    changed: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "what_if_config_hash": self.config_hash,
            "portfolios": {p: {"recorded": self.recorded[p].as_json(), "what_if": self.what_if[p].as_json()}
                           for p in sorted(self.recorded)},
            "changed": self.changed,
        }

    def summary(self) -> str:
        lines = [f"what-if under config {self.config_hash}: {counted(len(self.changed), 'decision')} "
                 f"{'changes' if len(self.changed) == 1 else 'change'}"]
        header = f"  {'portfolio':<12} {'':<9} {'accepted':>8} {'notional':>12} {'highest exposure':>17}  rejected"
        lines.append(header)
        for portfolio in sorted(self.recorded):
            for label, outcomes in (("recorded", self.recorded[portfolio]), ("what-if", self.what_if[portfolio])):
                rejected = ", ".join(f"{reason} {n}" for reason, n in sorted(outcomes.rejected.items())) or "-"
                lines.append(f"  {portfolio if label == 'recorded' else '':<12} {label:<9} {outcomes.accepted:>8} "
                             f"{decimals.canonical(outcomes.notional):>12} "
                             f"{decimals.canonical(outcomes.highest_exposure):>17}  {rejected}")
        for change in self.changed[:30]:
            lines.append(f"  changed {change['signal_id']} ({change['portfolio_id']}): "
                         f"{change['recorded']} -> {change['what_if']}")
        if len(self.changed) > 30:
            lines.append(f"  ... and {len(self.changed) - 30} more (--json lists all)")
        return "\n".join(lines)


def _brief(decision: dict[str, Any]) -> str:
    return f"accepted {decision['notional']}" if decision["outcome"] == "accepted" else decision["reason"]


def what_if(history: dict[str, list[Record]], config: SizingConfig, portfolio: str | None = None) -> WhatIf:
    """Decide the recorded interleaving again under `config`."""
    result = WhatIf(config.config_hash)
    steps = [step for step in recorded_interleaving(history["signals"], history["fills"], history["decisions"],
                                                       dead_lettered(history["dlq"]), history.get("controls", ()))
             if portfolio is None or (step.message is not None and step.message.portfolio_id == portfolio)]
    for step in steps:
        if step.recorded is not None:
            result.recorded[step.recorded["portfolio_id"]].add(step.recorded)
    for derived in rederive(steps, Instruments(history["instruments"]), lambda h, p: None, default=config):
        decision = decimals.loads_output(to_json(derived.decision))
        recorded = derived.step.recorded
        result.what_if[decision["portfolio_id"]].add(decision)
        if _brief(decision) != _brief(recorded):
            result.changed.append({"signal_id": decision["signal_id"], "portfolio_id": decision["portfolio_id"],
                                   "recorded": _brief(recorded), "what_if": _brief(decision)})
    return result


def plot(result: WhatIf, path: str, portfolios: Iterable[str] | None = None, most: int = 6) -> list[str]:
    """Exposure against the cap over event time, recorded (solid) and what-if
    (dashed), one panel per portfolio (the `most` with the highest recorded exposure)."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - the plot extra is optional
        from streams.errors import ConfigError

        raise ConfigError("--plot needs matplotlib: pip install 'streams-sizer[plot]'") from exc
    matplotlib.use("Agg")
    from datetime import datetime, timezone

    import matplotlib.pyplot as plt

    def label(ts: int) -> str:
        return datetime.fromtimestamp(ts / 1000, tz=timezone.utc).strftime("%H:%M:%S.%f")[:-3]

    chosen = list(portfolios) if portfolios else sorted(
        result.recorded, key=lambda p: result.recorded[p].highest_exposure, reverse=True)[:most]
    figure, axes = plt.subplots(len(chosen), 1, figsize=(10, 3.4 * len(chosen)), squeeze=False)
    for axis, portfolio in zip(axes[:, 0], chosen):
        # One step per decision in the order they were made: a burst in one instant stays readable.
        recorded_curve = result.recorded[portfolio].curve
        for name, outcomes, style in (("recorded", result.recorded[portfolio], "-"),
                                      ("what-if", result.what_if[portfolio], "--")):
            curve = outcomes.curve
            if not curve:
                continue
            xs = list(range(1, len(curve) + 1))
            line, = axis.step(xs, [float(e) for _, e, _ in curve], style, where="post", label=f"{name} exposure")
            caps = [(x, float(c)) for x, (_, _, c) in zip(xs, curve) if c is not None]
            if caps:
                axis.step([x for x, _ in caps], [c for _, c in caps], style, where="post", alpha=0.45,
                          color=line.get_color(), linewidth=2.5, label=f"{name} cap")
        count = len(recorded_curve)
        ticks = sorted({1, count, *range(1, count + 1, max(1, -(-count // 4)))})
        if len(ticks) > 2 and ticks[-1] - ticks[-2] <= max(1, count // 8):
            ticks.pop(-2)
        axis.set_xticks(ticks, [label(recorded_curve[t - 1][0]) for t in ticks], fontsize="small")
        axis.set_xlim(0.5, len(recorded_curve) + 0.5)
        axis.set_ylim(bottom=0)
        axis.set_title(f"portfolio {portfolio}: exposure against the cap")
        axis.set_ylabel("USD")
        axis.legend(loc="upper left", fontsize="small")
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("decisions in the order they were made (ticks: their event time, UTC)")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)
    return chosen
