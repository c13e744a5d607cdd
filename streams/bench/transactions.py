"""`make bench`'s `transactions` run: what one transaction per batch would save.

The bare exactly-once loop, contender (0) (`streams.bench.bare_loop`), in its two
forms: one transactional producer per input partition, each partition committed on
its own (today's, the worker's scheme), and one producer with one transaction per
batch covering every input partition of the batch (what one producer per worker,
KIP-447, would cost). Each form with its marker wait (the retry after Kafka refuses
to start a transaction while the previous one's markers are being written, and
every other retry of its producer: aiokafka's 20 ms and 2 ms by default,
`--marker-waits`) and with the broker's `transaction.partition.verification.enable`
on and off (`--verification`).

The broker setting is a dynamic one (Kafka 3.9: `cluster-wide`, which a per-broker
value overrides): the run sets it on every broker as a per-broker value through
IncrementalAlterConfigs, waits until every broker reports it, and puts back what was
there before when the run ends (the per-broker value it had, else none). No restart,
and nothing is written to the broker's `server.properties` (deploy/broker/broker.sh
writes that file at every start), so a broker the bench did not start is left as it
found it. The principal needs ALTER_CONFIGS on the cluster.

Runs alternate between the two forms run by run: for each setting, a throughput
run of one form then of the other, then a latency run of each, the order of the
forms (and of the settings) reversed every other round (`--rounds`). Throughput and
latency are measured as for every contender (`streams.bench.stream`); the
latency run at the same offered rate for all (`--rate`, 1,000 signals/s by
default). Beside them, from the loop's own count in the latency runs: records per
transaction and the AddPartitionsToTxn refused with CONCURRENT_TRANSACTIONS per
transaction (marker waits).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from streams.bench.bare_loop import TRANSACTION_FORMS, loop_counts
from streams.kafka.settings import ClientConfig

VERIFICATION = "transaction.partition.verification.enable"
MARKER_WAITS_MS = (20, 2)
VERIFICATIONS = (True, False)


@dataclass(frozen=True)
class Setting:
    """What a variant runs with besides its form."""

    verification: bool
    marker_wait_ms: int

    def label(self) -> str:
        return f"verification {'on' if self.verification else 'off'}, marker wait {self.marker_wait_ms} ms"


@dataclass(frozen=True)
class Step:
    """One run of the schedule: its round, setting, kind (throughput or latency) and form."""

    round: int
    setting: Setting
    kind: str
    form: str


def schedule(rounds: int, verifications: tuple[bool, ...], marker_waits_ms: tuple[int, ...],
             forms: tuple[str, ...] = TRANSACTION_FORMS) -> list[Step]:
    """Every run in order. Within a setting the forms alternate run by run (throughput
    of each, then latency of each); every other round reverses the order of the
    forms, of the marker waits and of the verification settings, so that neither form
    is always first after a change. The broker setting changes once per verification
    value and round."""
    steps = []
    for n in range(rounds):
        flip = (lambda values: tuple(reversed(values))) if n % 2 else tuple
        for verification in flip(verifications):
            for wait in flip(marker_waits_ms):
                for kind in ("throughput", "latency"):
                    steps.extend(Step(n, Setting(verification, wait), kind, form) for form in flip(forms))
    return steps


@dataclass
class Variant:
    """The figures of one form at one setting, one entry per run."""

    form: str
    setting: Setting
    rates: list[float] = field(default_factory=list)
    p50s_ms: list[float] = field(default_factory=list)
    p99s_ms: list[float] = field(default_factory=list)
    samples: int = 0
    # the latency runs' own counts: (transactions, records, marker waits, produce retries)
    counts: list[tuple[int, int, int, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def per_transaction(self, column: int) -> float:
        """A count of the latency runs (1 records, 2 marker waits, 3 produce retries) per
        transaction, over all of them; nan without any."""
        transactions = sum(c[0] for c in self.counts)
        return sum(c[column] for c in self.counts) / transactions if transactions else float("nan")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float], digits: int = 1) -> str:
    """`median (min-max)` of the runs, or the one value, or '-' with none."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:,.{digits}f}"
    return f"{median(values):,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def broker_ids(admin: Any) -> list[str]:
    cluster = admin.describe_cluster()
    return sorted(str(broker.get("broker_id", broker.get("node_id"))) for broker in cluster["brokers"])


def broker_verification(admin: Any, ids: list[str]) -> dict[str, tuple[str | None, bool]]:
    """Each broker's (value, whether it is a per-broker dynamic value) of VERIFICATION."""
    from kafka.admin import ConfigResource, ConfigResourceType

    found = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, i, {VERIFICATION: None}) for i in ids],
                                   config_filter="all")
    out = {}
    for i in ids:
        config = found.get("broker", {}).get(i, {}).get(VERIFICATION, {})
        out[i] = (config.get("value"), config.get("config_source") == "DYNAMIC_BROKER_CONFIG")
    return out


def alter_verification(admin: Any, values: dict[str, str | None]) -> None:
    """Set VERIFICATION per broker to the value given, or delete the per-broker value
    (None); RuntimeError with the broker's answer when one refuses."""
    from kafka.admin import AlterConfigOp, ConfigResource, ConfigResourceType

    resources = [ConfigResource(ConfigResourceType.BROKER, i,
                                {VERIFICATION: (AlterConfigOp.DELETE, None) if value is None else value})
                 for i, value in values.items()]
    result = admin.alter_configs(resources, raise_on_unknown=False, incremental=True)
    refused = [f"broker {name}: {outcome}" for by_name in result.values() for name, outcome in by_name.items()
               if outcome != "OK"]
    if refused:
        raise RuntimeError(f"the broker refused {VERIFICATION}: {'; '.join(refused)}")


def reported(admin: Any, ids: list[str], wanted: dict[str, tuple[str | None, bool]] | str,
             timeout_s: float) -> None:
    """Wait until every broker reports VERIFICATION as `wanted` (a value, or each one's
    (value, per-broker) pair); a broker applies a change when it reads it from the
    metadata log, shortly after the controller has taken it."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = broker_verification(admin, ids)
        if all((now[i][0] == wanted) if isinstance(wanted, str) else (now[i] == wanted[i]) for i in ids):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{VERIFICATION}: the brokers report {now} after {timeout_s:g} s, not {wanted}")
        time.sleep(0.2)


@contextlib.contextmanager
def broker_verification_switch(client: ClientConfig, timeout_s: float = 30.0) -> Iterator[Callable[[bool], None]]:
    """A function that turns Kafka's transaction partition verification on or off on
    every broker (per-broker dynamic values; it returns once every broker reports the
    value); on leaving, each broker's per-broker value as it was before, or none."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(**client.options(request_timeout_ms=30_000))
    try:
        ids = broker_ids(admin)
        before = broker_verification(admin, ids)

        def switch(enabled: bool) -> None:
            wanted = "true" if enabled else "false"
            alter_verification(admin, {i: wanted for i in ids})
            reported(admin, ids, wanted, timeout_s)

        try:
            yield switch
        finally:
            alter_verification(admin, {i: value if per_broker else None for i, (value, per_broker) in before.items()})
            reported(admin, ids, before, timeout_s)
    finally:
        admin.close()


def run_step(client: ClientConfig, step: Step, variant: Variant, args: argparse.Namespace, workdir: Path) -> None:
    """One run of the bare loop, its figures added to `variant`."""
    from streams.bench.stream import PYTHON, Contender, latency, percentile, signals_only, throughput

    env = {"SIZER_PROCESSING_GUARANTEE": "exactly_once", "BENCH_TRANSACTIONS": step.form,
           "BENCH_MARKER_WAIT_MS": str(step.setting.marker_wait_ms)}
    contender = Contender(client, [PYTHON, "-m", "streams.bench.bare_loop"], env, workdir)
    try:
        if step.kind == "throughput":
            variant.rates.append(asyncio.run(throughput(contender, signals_only(args.backlog, seed=11),
                                                        args.backlog, args.timeout)))
        else:
            samples = asyncio.run(latency(contender, args.rate, args.seconds))
            variant.p50s_ms.append(percentile(samples, 0.50))
            variant.p99s_ms.append(percentile(samples, 0.99))
            variant.samples += len(samples)
    except RuntimeError as exc:
        variant.failures.append(f"{step.kind}: {str(exc).splitlines()[0]} (log {contender.workdir})")
    finally:
        contender.close()
    counts = loop_counts((contender.workdir / "contender.log").read_text(errors="replace"))
    if step.kind == "latency" and counts is not None:
        variant.counts.append(counts)


def measure_transactions(client: ClientConfig, args: argparse.Namespace, workdir: Path) -> list[Variant]:
    """Every variant's figures over `args.rounds` rounds of the schedule."""
    import sys

    steps = schedule(args.rounds, args.verification, args.marker_waits)
    variants: dict[tuple[str, Setting], Variant] = {}
    for step in steps:
        variants.setdefault((step.form, step.setting), Variant(step.form, step.setting))
    applied: bool | None = None
    with broker_verification_switch(client) as switch:
        for n, step in enumerate(steps, 1):
            if applied != step.setting.verification:
                switch(step.setting.verification)
                applied = step.setting.verification
            print(f"measuring transactions {n}/{len(steps)}: round {step.round + 1}, {step.form}, "
                  f"{step.setting.label()}, {step.kind} ...", file=sys.stderr, flush=True)
            run_step(client, step, variants[(step.form, step.setting)], args, workdir)
    return list(variants.values())


def ratio(value: float, base: float) -> str:
    if value != value or base != base or not base:
        return "-"
    return f"{value / base:.2f}"


def print_transactions(variants: list[Variant], rounds: int, rate: int) -> None:
    print(f"\ntransactions: (0) exactly-once, one transaction per partition against one per batch, "
          f"{rounds} round(s) alternated run by run; latency at {rate:,} signals/s; median (min-max) of the runs\n")
    variants = sorted(variants, key=lambda v: (not v.setting.verification, -v.setting.marker_wait_ms,
                                               TRANSACTION_FORMS.index(v.form)))  # type: ignore[arg-type]
    print(f"| {'form':<13} | {'verification':<12} | {'marker wait':>11} | {'signals/s':>26} | {'p50 ms':>19} | "
          f"{'p99 ms':>21} | {'records/txn':>11} | {'waits/txn':>9} | {'retries/txn':>11} |")
    print(f"|{'-' * 15}|{'-' * 14}|{'-' * 12}:|{'-' * 27}:|{'-' * 20}:|{'-' * 22}:|{'-' * 12}:|{'-' * 10}:|"
          f"{'-' * 12}:|")
    for v in variants:
        print(f"| {v.form:<13} | {'on' if v.setting.verification else 'off':<12} | "
              f"{v.setting.marker_wait_ms:>8} ms | {spread(v.rates, 0):>26} | {spread(v.p50s_ms):>19} | "
              f"{spread(v.p99s_ms):>21} | {v.per_transaction(1):>11.1f} | "
              f"{v.per_transaction(2):>9.2f} | {v.per_transaction(3):>11.2f} |")
    by_key = {(v.form, v.setting): v for v in variants}
    print("\nper batch against per partition at the same setting (medians; < 1 is less latency, > 1 more "
          "throughput):\n")
    for (form, setting), batch in by_key.items():
        partition = by_key.get(("per_partition", setting))
        if form != "per_batch" or partition is None:
            continue
        print(f"- {setting.label()}: p50 x{ratio(median(batch.p50s_ms), median(partition.p50s_ms))}, "
              f"p99 x{ratio(median(batch.p99s_ms), median(partition.p99s_ms))}, "
              f"signals/s x{ratio(median(batch.rates), median(partition.rates))}")
    for v in variants:
        for failure in v.failures:
            print(f"{v.form}, {v.setting.label()} failed, {failure}")
