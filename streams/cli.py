"""The `sizer` command line."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any, Callable, Sequence

from streams.config import PRESETS, SizingConfig, load_config
import asyncio
import ssl

from aiokafka.errors import KafkaConnectionError, KafkaError

from streams.errors import ConfigError, SizerError, exit_code, kafka_error


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--preset", choices=sorted(PRESETS), help="start from a shipped preset")
    group.add_argument("--config", metavar="FILE", help="TOML config file (may name its own preset)")


def _config(args: argparse.Namespace) -> SizingConfig:
    return load_config(preset=args.preset, config_file=args.config)


def cmd_replay(args: argparse.Namespace) -> int:
    from streams.history.replay import replay_file

    config = _config(args)
    if args.from_kafka:
        return _replay_kafka(args, config)
    if args.journal is None:
        raise ConfigError("replay: give --journal FILE, or --from-kafka to replay topic history")
    try:
        open(args.journal, "rb").close()
    except OSError as exc:
        raise ConfigError(f"--journal: cannot read {args.journal}: {exc.strerror}") from exc
    replay_file(args.journal, config)
    return 0


def _replay_kafka(args: argparse.Namespace, config: SizingConfig) -> int:
    import asyncio
    import json

    from streams.history.audit import read_history, settle
    from streams.history.progress import Progress
    from streams.kafka.topics import apply
    from streams.history.whatif import plot, what_if

    kafka, topics = _kafka(args)
    client = kafka.for_role("replay")
    asyncio.run(apply(client, topics, create=False))
    history = settle(asyncio.run(read_history(client, topics, Progress())))
    result = what_if(history, config, args.portfolio)
    print(json.dumps(result.as_json(), indent=1) if args.json else result.summary())
    if args.plot:
        shown = plot(result, args.plot, [args.portfolio] if args.portfolio else None)
        print(f"plot: {args.plot} ({', '.join(shown)})", file=sys.stderr)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from streams.history.sweep_report import run_command

    return run_command(args, _kafka(args) if args.from_kafka else None)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from streams.history.evaluate_command import run_command

    return run_command(args)


def cmd_config(args: argparse.Namespace) -> int:
    from streams.wire import decimals
    from streams.kafka.settings import setting_source
    from streams.worker.settings import load_settings

    config = _config(args)
    kafka = load_settings()
    # SecretStr fields dump as "**********": a password never reaches this output
    kafka_values = {key: str(value) if value is not None else None for key, value in kafka.model_dump().items()}
    kafka_sources = {field: setting_source(kafka, field) for field in kafka_values}

    sources = getattr(config, "sources", {})
    effective = config.effective()
    # what the engine applies where a setting left unset is derived from others (the
    # configuration itself, as hashed and published, keeps the setting as given)
    pair_cap = None if config.pair_cap is None else decimals.canonical(config.pair_cap)
    derived = {"pair_cap_usd": {"value": pair_cap, "from": config.pair_cap_origin(sources)}}
    if args.json:
        print(decimals.dumps({"config_hash": config.config_hash, "config": effective, "sources": sources,
                              "derived": derived, "kafka": kafka_values, "kafka_sources": kafka_sources}))
        return 0
    from streams.text import table

    def shown(value: object) -> str:
        if isinstance(value, dict):  # an empty table (group_caps, portfolios) or prefix: said, not a blank cell
            return " ".join(f"{key}={shown(item)}" for key, item in value.items()) or "(none)"
        if value == "":
            return "(none)"
        return "(unset)" if value is None else value if isinstance(value, str) else decimals.dumps(value)

    rows: list[tuple[object, ...]] = []
    for field, value in effective.items():
        if field in derived:
            value = derived[field]["value"]
            rows.append((field, "none" if value is None else shown(value), derived[field]["from"]))
            continue
        items = value if isinstance(value, list) and value else [value]  # a list: one row an item
        rows += [(field if i == 0 else "", shown(item), sources.get(field, "") if i == 0 else "")
                 for i, item in enumerate(items)]
    print(f"config hash {config.config_hash} (stamped on every decision and order)\n")
    print("\n".join(table(("sizing setting", "value", "from"), rows)))
    print()
    print("\n".join(table(("SIZER_* setting", "value", "from"),
                          [(field, shown(value), kafka_sources[field]) for field, value in kafka_values.items()])))
    return 0


def _add_kafka_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap", metavar="HOST:PORT",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS, else the local broker 127.0.0.1:19092)",
    )


def _kafka(args: argparse.Namespace, max_future_skew_ms: int | None = None, **overrides: object):
    """The settings and the topics; `max_future_skew_ms` pins the input topics'
    record-timestamp bound (`topics.load_topics`)."""
    from streams.worker.settings import load_settings
    from streams.kafka.topics import load_topics

    kafka = load_settings(bootstrap=args.bootstrap, **overrides)
    args.kafka_settings = kafka  # main() explains a failed connection with these
    return kafka, load_topics(kafka.topics_file, kafka.topic_prefix, max_future_skew_ms,
                              replication=kafka.replication)


def cmd_topics_apply(args: argparse.Namespace) -> int:
    import asyncio

    from streams.kafka.changelogs import WORKER_TABLES, changelog
    from streams.kafka.topics import apply

    # the input topics' record timestamps are bounded by the configuration's max_future_skew_s
    kafka, topics = _kafka(args, _config(args).max_future_skew_ms)
    # and the worker group's changelogs that exist: what the workers would refuse at start
    changelogs = {changelog(kafka.app_id, table): topics["signals"].partitions for table in WORKER_TABLES}
    for line in asyncio.run(apply(kafka.for_role("topics"), topics, create=not args.check, app_id=kafka.app_id,
                                  changelogs=changelogs)):
        print(line)
    return 0


def cmd_acls_apply(args: argparse.Namespace) -> int:
    from streams.ops.acls import apply_acls, load_acls, product_resources

    kafka, topics = _kafka(args)
    principals = load_acls(kafka.acls_file, topics, kafka.app_id)
    resources = product_resources(principals, topics, kafka.app_id)
    for line in apply_acls(kafka, principals, resources, create=not args.check):
        print(line)
    return 0


def _stop_on_interrupt() -> None:
    """Let Ctrl-C and SIGTERM stop a command that runs until it is stopped.

    A shell without job control (`cmd &` in a script) starts its children with
    SIGINT ignored, and Python keeps it ignored: Ctrl-C would never reach them.
    SIGTERM is taken as Ctrl-C, so a supervisor's stop ends the command the same
    way, with the same exit code and output."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    # Whatever handles SIGINT now: inside asyncio.run, its handler cancels the
    # running task (so `finally` blocks close the clients), else KeyboardInterrupt.
    handler = signal.getsignal(signal.SIGINT)
    (handler if callable(handler) else signal.default_int_handler)(signal.SIGINT, frame)


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.worker.run import run_worker

    # SIGINT only: once started, faust's worker (mode.Worker) installs its own
    # handlers for SIGINT and SIGTERM, which stop it gracefully.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    config = _config(args)
    kafka, topics = _kafka(args, processing_guarantee=args.processing_guarantee, web_port=args.web_port)
    origin = f"file {args.config}" if args.config else f"preset {config.preset}"
    return run_worker(kafka, config, topics, loglevel=args.loglevel, origin=origin)


def cmd_audit(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import time

    from streams.history.audit import audit, output_schema_subjects, read_history, settle
    from streams.kafka.schema_registry import schema_registry
    from streams.wire.models import parse_time
    from streams.history.progress import Progress

    from streams.kafka.topics import apply

    started = time.monotonic()
    kafka, topics = _kafka(args)
    client = kafka.for_role("audit")
    asyncio.run(apply(client, topics, create=False))  # missing or drifted topics: exit 3
    progress = Progress(unit="decisions re-derived", every=5_000)
    history = settle(asyncio.run(read_history(client, topics, progress)))
    schema_subjects = None
    if kafka.schema_registry_url is not None:  # the ids framing the outputs, checked against the registry
        schema_subjects = asyncio.run(output_schema_subjects(history, schema_registry(kafka)))
    report = audit(history, args.portfolio, parse_time(args.start), parse_time(args.end), progress,
                   partitions=topics["signals"].partitions, schema_subjects=schema_subjects)
    report.seconds = time.monotonic() - started  # the wall time a user waited, reading included
    print(json.dumps(report.as_json(), indent=1, default=str) if args.json else report.summary())
    return 0 if report.ok else 1


def cmd_control(args: argparse.Namespace) -> int:
    import json

    from streams.ops import control

    kafka, topics = _kafka(args)
    if args.action == "status":
        rows = asyncio.run(control.status(kafka, topics, args.portfolio))
        print(json.dumps(rows, indent=1))
        return 0
    if args.portfolio is None or args.reason is None:
        raise ConfigError(f"control {args.action}: --portfolio and --reason are required")
    kind = args.action.replace("-", "_")
    if kind == "release" and args.order_id is None:
        raise ConfigError("control release: --order-id is required")
    if kind == "adjust_equity" and args.amount is None:
        raise ConfigError("control adjust-equity: --amount is required (USD; negative for a withdrawal)")
    if args.mode is not None and kind != "halt" or args.clear and kind != "resume":
        raise ConfigError(f"control {args.action}: --mode is for halt, --clear for resume")
    # self-declared (Kafka does not tell the worker who wrote a record: docs/pages/producers.md);
    # by default the SASL user this command authenticates as, else the OS user
    value = control.validate_command(kind, args.portfolio, args.reason, args.operator or kafka.sasl_username,
                                     order_id=args.order_id if kind == "release" else None,
                                     amount=args.amount if kind == "adjust_equity" else None,
                                     mode=args.mode, clear=args.clear)
    partition, offset = asyncio.run(control.send(kafka, topics, value, args.timeout))
    rows = asyncio.run(control.status(kafka, topics, args.portfolio))
    state = control.applied_row(value, partition, offset, rows[0])
    print(json.dumps({"command": value, "partition": partition, "offset": offset, "state": state}, indent=1))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from streams.ops.status import read_status, render

    kafka, topics = _kafka(args)
    given = _config(args) if (args.preset or args.config) else None
    status = asyncio.run(read_status(kafka, topics, given, args.portfolio))
    print(json.dumps(status, indent=1) if args.json else render(status))
    return 0


def cmd_portfolios(args: argparse.Namespace) -> int:
    import json

    from streams.ops import portfolios

    kafka, topics = _kafka(args)
    if args.action == "list":
        print(json.dumps(asyncio.run(portfolios.registered(kafka, topics)), indent=1))
        return 0
    if not args.portfolio or args.reason is None:
        raise ConfigError(f"portfolios {args.action}: give one or more portfolio ids and --reason")
    count = asyncio.run(portfolios.change(kafka, topics, args.portfolio, args.action == "register", args.reason,
                                          args.operator))
    print(f"{args.action}ed {count} portfolio{'s' if count != 1 else ''} on {topics.name('portfolios')}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from streams.ops.console import publish_journal

    config = _config(args)
    kafka, topics = _kafka(args)
    return publish_journal(kafka, topics, args.journal, config.max_future_skew_ms, dry_run=args.dry_run,
                           force=args.force, in_order=args.in_order, timeout_s=args.timeout)


def cmd_tail(args: argparse.Namespace) -> int:
    import asyncio

    from streams.ops import console

    _stop_on_interrupt()
    start = console.parse_from(args.start)
    kafka, topics = _kafka(args)
    try:
        asyncio.run(console.tail(kafka, topics, args.topic or console.TAILED_BY_DEFAULT, args.follow, args.json,
                                 args.portfolio, start))
    except KeyboardInterrupt:
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sizer", description="Streaming position sizer on Kafka.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_offline_commands(commands)
    _add_as_code_and_audit_commands(commands)
    _add_operator_commands(commands)
    _add_status_and_publish_commands(commands)
    _add_tail_command(commands)
    _add_worker_command(commands)
    return parser


Commands = Any  # argparse's subparsers action (a private class)


def _add_offline_commands(commands: Commands) -> None:
    """replay, sweep, config."""
    replay = commands.add_parser(
        "replay", help="the engine over an offline journal (one decision per signal line), or over Kafka history "
                       "under another configuration (what-if)")
    source = replay.add_mutually_exclusive_group()
    source.add_argument("--journal", metavar="FILE", help="JSON Lines journal")
    source.add_argument("--from-kafka", action="store_true",
                        help="replay topic history in its recorded interleaving and compare with what was decided")
    _add_config_args(replay)
    _add_kafka_args(replay)
    replay.add_argument("--portfolio", help="--from-kafka: only this portfolio")
    replay.add_argument("--plot", metavar="FILE.png", help="--from-kafka: draw exposure against the cap, recorded vs what-if")
    replay.add_argument("--json", action="store_true", help="--from-kafka: the report as JSON")
    replay.set_defaults(run=cmd_replay)

    from streams.history.sweep_report import add_arguments as add_sweep_arguments

    sweep = commands.add_parser(
        "sweep", help="many configurations (a grid, or policies side by side) over a journal or Kafka history, "
                      "with PnL scaled to each one's sizes")
    add_sweep_arguments(sweep)
    _add_config_args(sweep)
    _add_kafka_args(sweep)
    sweep.set_defaults(run=cmd_sweep)

    from streams.history.evaluate_command import add_arguments as add_evaluate_arguments

    evaluate = commands.add_parser(
        "evaluate", help="the graduated design's promises tested on real market history (static vs graduated, "
                         "bootstrap intervals, verdicts)")
    add_evaluate_arguments(evaluate)
    evaluate.set_defaults(run=cmd_evaluate)

    config = commands.add_parser("config", help="print the effective configuration, where each value comes from, "
                                                 "and its hash")
    _add_config_args(config)
    config.add_argument("--json", action="store_true", help="JSON instead of tables")
    config.set_defaults(run=cmd_config)


def _add_as_code_and_audit_commands(commands: Commands) -> None:
    """topics apply, acls apply, audit."""
    topics = commands.add_parser("topics", help="topics as code: create or check every topic in topics/topics.toml")
    topic_commands = topics.add_subparsers(dest="topics_command", required=True)
    topics_apply = topic_commands.add_parser("apply", help="create missing topics; fail on any that differ")
    topics_apply.add_argument("--check", action="store_true", help="create nothing; fail if any topic is missing")
    _add_config_args(topics_apply)  # its max_future_skew_s bounds the input topics' record timestamps
    _add_kafka_args(topics_apply)
    topics_apply.set_defaults(run=cmd_topics_apply)

    acls = commands.add_parser("acls", help="ACLs as code: create or check every ACL in topics/acls.toml")
    acl_commands = acls.add_subparsers(dest="acls_command", required=True)
    acls_apply = acl_commands.add_parser(
        "apply", help="create missing ACLs (as a super user); fail naming every ACL that differs")
    acls_apply.add_argument("--check", action="store_true", help="create nothing; fail if any ACL is missing")
    _add_kafka_args(acls_apply)
    acls_apply.set_defaults(run=cmd_acls_apply)

    audit = commands.add_parser("audit", help="re-derive every decision from topic history and verify it")
    _add_kafka_args(audit)
    audit.add_argument("--portfolio", help="verify only this portfolio's decisions")
    audit.add_argument("--from", dest="start", metavar="TIME", help="only signals at or after (RFC 3339 or epoch ms)")
    audit.add_argument("--to", dest="end", metavar="TIME", help="only signals at or before (RFC 3339 or epoch ms)")
    audit.add_argument("--json", action="store_true", help="the full report as JSON")
    audit.set_defaults(run=cmd_audit)


def _add_operator_commands(commands: Commands) -> None:
    """control, portfolios."""
    control = commands.add_parser(
        "control", help="operator commands: halt, resume, release, adjust-equity, reset-clock (applied by the "
                        "workers); status")
    from streams.wire.roles import message_types

    control.add_argument("action", choices=[kind.replace("_", "-") for kind in message_types("controls")] + ["status"])
    control.add_argument("--portfolio", help="the portfolio (status: all when omitted)")
    control.add_argument("--reason", help="why (recorded with the command and in every HALTED trace)")
    control.add_argument("--operator", help="who, as recorded in the command (default: the SASL user name, else "
                                            "the OS user; self-declared: see docs/pages/producers.md)")
    control.add_argument("--order-id", help="release: the order whose reservation to release")
    control.add_argument("--amount", help="adjust-equity: USD, negative for a withdrawal")
    control.add_argument("--mode", choices=["full", "reduce_only"],
                         help="halt: full (default: every signal HALTED) or reduce_only (opens REDUCE_ONLY)")
    control.add_argument("--clear", choices=["max_drawdown"], action="append",
                         help="resume: also clear the drawdown latch (MAX_DRAWDOWN), re-arming it from the equity "
                              "now; a plain resume lifts only the operator's halt")
    control.add_argument("--timeout", type=float, default=60.0,
                         help="seconds to wait for the workers to apply it (default: %(default)s)")
    _add_kafka_args(control)
    control.set_defaults(run=cmd_control)

    portfolios = commands.add_parser(
        "portfolios", help="the registered portfolios (admitted by workers with SIZER_REQUIRE_REGISTRATION=true): "
                           "register, deregister, list")
    portfolios.add_argument("action", choices=["register", "deregister", "list"])
    portfolios.add_argument("portfolio", nargs="*", help="register/deregister: the portfolio ids")
    portfolios.add_argument("--reason", help="why (recorded with the registration)")
    portfolios.add_argument("--operator", help="who (default: the SASL user name, else the OS user)")
    _add_kafka_args(portfolios)
    portfolios.set_defaults(run=cmd_portfolios)



def _add_status_and_publish_commands(commands: Commands) -> None:
    """status, publish."""
    status = commands.add_parser(
        "status", help="each portfolio now, from the worker group's tables: equity, peak, drawdown, phase, streaks, "
                       "what is in force, positions, reservations, and the room left under each cap")
    status.add_argument("--portfolio", help="only this portfolio (one the tables do not hold yet shows fresh)")
    status.add_argument("--json", action="store_true", help="JSON instead of a table")
    _add_config_args(status)
    status.epilog = "caps: the configuration the workers last published, unless --preset or --config names one"
    _add_kafka_args(status)
    status.set_defaults(run=cmd_status)


    publish = commands.add_parser(
        "publish", help="check a journal's inputs by the worker's own rules, then publish them all (or nothing) "
                        "onto their topics: keyed by portfolio (instruments by symbol), instruments first, then in "
                        "file order per topic")
    publish.add_argument("--journal", metavar="FILE", required=True, help="JSON Lines journal (see replay)")
    publish.add_argument("--dry-run", action="store_true", help="check and report; send nothing")
    publish.add_argument("--force", action="store_true",
                         help="send records the worker will dead-letter too (to exercise the dead-letter path)")
    publish.add_argument("--in-order", action="store_true",
                         help="a journal mixing topics: send one run of a topic at a time and wait until the worker "
                              "group has applied it, so the worker applies the journal in file order")
    publish.add_argument("--timeout", type=float, default=60.0,
                         help="--in-order: seconds to wait for the workers to apply each run (default: %(default)s)")
    _add_config_args(publish)
    _add_kafka_args(publish)
    publish.set_defaults(run=cmd_publish)


def _tailed(name: str) -> str:
    """A topic `sizer tail` shows (argparse's `choices` refuses an empty `nargs="*"`)."""
    from streams.ops.console import TAILED

    if name not in TAILED:
        raise argparse.ArgumentTypeError(f"invalid topic {name!r} (choose from {', '.join(TAILED)})")
    return name


def _add_tail_command(commands: Commands) -> None:
    from streams.ops.console import TAILED, TAILED_BY_DEFAULT

    tail_ = commands.add_parser(
        "tail", help="print what happened (read_committed): inputs and outputs merged in time order")
    tail_.add_argument("topic", nargs="*", type=_tailed, metavar="TOPIC",
                       help=f"any of {', '.join(TAILED)} (default: {' '.join(TAILED_BY_DEFAULT)})")
    tail_.add_argument("--portfolio", help="only this portfolio's records")
    tail_.add_argument("--from", dest="start", default="beginning", metavar="WHEN",
                       help="beginning (default), now (only new records: implies --follow), or a time "
                            "(RFC 3339 or epoch ms: records written at or after it)")
    tail_.add_argument("--follow", "-f", action="store_true",
                       help="then keep printing new records (Ctrl-C or SIGTERM stops)")
    tail_.add_argument("--json", action="store_true", help="one JSON object a line instead of a table")
    _add_kafka_args(tail_)
    tail_.set_defaults(run=cmd_tail)


def _add_worker_command(commands: Commands) -> None:
    worker = commands.add_parser("worker", help="run a stream-processing worker")
    _add_config_args(worker)
    _add_kafka_args(worker)
    worker.add_argument("--processing-guarantee", choices=["exactly_once", "at_least_once"],
                        help="default: $SIZER_PROCESSING_GUARANTEE, else exactly_once")
    worker.add_argument("--web-port", type=int, help="web and /metrics port (default: $SIZER_WEB_PORT, else 6066)")
    worker.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"],
                        help="the worker's log level (default: %(default)s)")
    worker.set_defaults(run=cmd_worker)


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    from streams.wire.decimals import use_engine_context

    use_engine_context()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "worker":
        from streams.logs import configure

        # aiokafka logs every retry (metadata, leadership) at WARNING; a command's output is its report.
        # (The worker logs as SIZER_LOG_FORMAT says once its settings are validated.)
        configure("json" if os.environ.get("SIZER_LOG_FORMAT") == "json" else "text", logging.ERROR)
        # a broker that cannot be reached is reported once, as one line, by main()
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return reporting(lambda: args.run(args), settings=lambda: getattr(args, "kafka_settings", None),
                     where=getattr(args, "bootstrap", None))


def reporting(run: Callable[[], int], prog: str = "sizer", settings: Callable[[], Any] = lambda: None,
              where: str | None = None) -> int:
    """`run()`'s exit code; what went wrong that the user can act on is one line on
    stderr, never a traceback: a `SizerError` (configuration, topics, ACLs) with its
    documented exit code, a broker that cannot be reached or refuses us with 4
    (docs: operating, "Exit codes"). `settings()`: the Kafka settings in use, if any, to find
    the cause aiokafka's "Unable to bootstrap" drops (TLS, SASL) and to name the
    brokers; else `where` names them."""
    try:
        return run()
    except SizerError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exit_code(exc)
    except BrokenPipeError:
        return 0
    except (KafkaError, ssl.SSLError, ConnectionError, asyncio.TimeoutError) as exc:
        kafka_settings = settings()
        if kafka_settings is not None and isinstance(exc, KafkaConnectionError):
            exc = asyncio.run(kafka_settings.connection_error()) or exc
        where = kafka_settings.bootstrap if kafka_settings is not None else where
        refused = kafka_settings.refused() if kafka_settings is not None else None
        print(f"{prog}: {kafka_error(exc, where, refused)}", file=sys.stderr)
        return 4


if __name__ == "__main__":
    sys.exit(main())
