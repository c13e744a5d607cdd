"""Running every configuration of a sweep over one history, in worker processes,
and sharing one run's figures with the configurations that would give the same run.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence


from streams.config import SizingConfig
from streams.wire import decimals

from streams.history.sweep.events import History
from streams.history.sweep.figures import curves, metrics
from streams.history.sweep.grid import Configuration
from streams.history.sweep.simulation import simulate


@dataclass
class Outcome:
    configuration: Configuration
    metrics: dict[str, Any]
    curves: dict[str, Any]
    identical: int
    compared: int
    first_changes: list[dict[str, Any]]
    seconds: float  # wall time of its run; 0 when it shares another's run
    shares_run_of: Configuration | None = None  # the configuration whose run gave these figures (`same_run`)


class SettingsRead:
    """A configuration as one run reads it: the same values, and the names of the
    settings the run read (`read`). A name is looked up on the configuration once and
    kept, so a run reads through it as fast as through the configuration itself."""

    def __init__(self, config: SizingConfig) -> None:
        self._config = config
        self.read: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._config, name)
        self.read.add(name)
        self.__dict__[name] = value
        return value

    def for_portfolio(self, portfolio_id: str) -> Any:
        """The engine's per-portfolio lookup (`SizingConfig.for_portfolio`), read
        through: without portfolio tables, this same reader; with them, a run reads
        every setting (its portfolios' own), so it shares its figures with no other."""
        if not self.portfolios:
            return self
        self.read.update(type(self._config).model_fields)
        return self._config.for_portfolio(portfolio_id)


def same_run(read: Iterable[str], ran: SizingConfig, other: SizingConfig, compares_records: bool) -> bool:
    """Whether `other` gives exactly the run (and figures) `ran` gave over the same
    history: both hold the same value, of the same type and written the same, for
    every setting the run of `ran` read (`SettingsRead.read`). The engine and the sweep
    read a configuration only by its attributes, so a run is a function of the history
    and of the values it read: `other`, from the same start, reads the same settings,
    gets the same values and makes every step the same. The
    config hash only stamps the decisions a run makes; it counts only when the
    history has recorded decisions to compare them with (`compares_records`)."""
    for name in read:
        if name == "config_hash" and not compares_records:
            continue
        mine, theirs = getattr(ran, name), getattr(other, name)
        if type(mine) is not type(theirs) or repr(mine) != repr(theirs):
            return False
    return True


def dispatch_order(chosen: Sequence[Configuration]) -> list[int]:
    """The order configurations are run in: the first of every policy, then the
    second of every policy, and so on. A policy's first run shows which of the grid's
    settings it never reads; its other configurations that differ only in those
    share that run (`same_run`) instead of being run again."""
    by_policy: dict[str, list[int]] = {}
    for i, configuration in enumerate(chosen):
        by_policy.setdefault(configuration.policy, []).append(i)
    return [i for row in itertools.zip_longest(*by_policy.values()) for i in row if i is not None]


# The history and configurations of the running sweep: forked worker processes
# inherit them instead of receiving a copy through a pipe.
_SHARED: tuple[History, list[Configuration], bool] | None = None


def _one(index: int) -> tuple[int, Outcome, set[str]]:
    """Configuration `index` run over the shared history: (index, its outcome, the
    names of the settings its run read)."""
    import gc

    gc.disable()  # every object a run makes lives until it ends: nothing for the collector to find
    decimals.use_engine_context()
    history, chosen, with_curves = _SHARED  # type: ignore[misc]
    started = time.perf_counter()
    configuration = chosen[index]
    config = SettingsRead(configuration.config)
    as_config: SizingConfig = config  # type: ignore[assignment]  # read as the configuration itself
    run = simulate(history, as_config)
    outcome = Outcome(configuration, metrics(history, as_config, run),
                      curves(history, as_config, run) if with_curves else {}, run.identical,
                      run.compared, run.first_changes, time.perf_counter() - started)
    return index, outcome, config.read


def sweep(history: History, chosen: list[Configuration], workers: int | None = None,
          progress: Callable[[int, int], None] = lambda done, total: None, with_curves: bool = True
          ) -> list[Outcome]:
    """Run every configuration over the history, `workers` processes at a time
    (default: one per core). Results come back in the order of `chosen`; each
    outcome's `curves` only `with_curves` (they are for plots), else empty.

    Configurations run in `dispatch_order`; one not started yet that would give the
    same run as one finished (`same_run`) takes that run's figures instead of being run."""
    global _SHARED
    workers = max(1, min(workers or os.cpu_count() or 1, len(chosen)))
    pending = dispatch_order(chosen)
    results_at: dict[int, Outcome] = {}
    compares_records = history.source == "kafka"

    def finished(index: int, outcome: Outcome, read: set[str]) -> None:
        results_at[index] = outcome
        ran = chosen[index].config
        for other in [j for j in pending if same_run(read, ran, chosen[j].config, compares_records)]:
            pending.remove(other)
            results_at[other] = Outcome(chosen[other], outcome.metrics, outcome.curves, outcome.identical,
                                        outcome.compared, outcome.first_changes, 0.0, chosen[index])
        progress(len(results_at), len(chosen))

    _SHARED = (history, chosen, with_curves)
    try:
        if workers == 1 or "fork" not in multiprocessing.get_all_start_methods():
            while pending:
                finished(*_one(pending.pop(0)))
            return [results_at[i] for i in range(len(chosen))]
        import gc
        import queue

        # The history is read-only in the children: keep their pages shared. No collection
        # first: a full pass over the history's objects costs about a second and frees nothing.
        gc.freeze()
        done: queue.SimpleQueue = queue.SimpleQueue()
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            running: dict[int, str] = {}  # index -> policy
            while pending or running:
                while pending and len(running) < workers:
                    # another policy first: what a run on shows may spare its policy's next ones
                    index = next((j for j in pending if chosen[j].policy not in running.values()), pending[0])
                    pending.remove(index)
                    running[index] = chosen[index].policy
                    pool.apply_async(_one, (index,), callback=done.put, error_callback=done.put)
                result = done.get()
                if isinstance(result, BaseException):
                    raise result
                del running[result[0]]
                finished(*result)
        gc.unfreeze()
        return [results_at[i] for i in range(len(chosen))]
    finally:
        _SHARED = None
