"""The `sizer` command line."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from streams.config import PRESETS, SizingConfig, load_config
from streams.errors import ConfigError, SizerError


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--preset", choices=sorted(PRESETS), help="start from a shipped preset")
    group.add_argument("--config", metavar="FILE", help="TOML config file (may name its own preset)")


def _config(args: argparse.Namespace) -> SizingConfig:
    return load_config(preset=args.preset, config_file=args.config)


def cmd_replay(args: argparse.Namespace) -> int:
    from streams.replay import replay_file

    config = _config(args)
    try:
        open(args.journal, "rb").close()
    except OSError as exc:
        raise ConfigError(f"--journal: cannot read {args.journal}: {exc.strerror}") from exc
    replay_file(args.journal, config)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from streams import decimals

    config = _config(args)
    print(decimals.dumps({"config_hash": config.config_hash, "config": config.effective()}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sizer", description="Streaming position sizer on Kafka.")
    commands = parser.add_subparsers(dest="command", required=True)

    replay = commands.add_parser("replay", help="run the engine over an offline journal, one decision per signal")
    replay.add_argument("--journal", required=True, metavar="FILE", help="JSON Lines journal")
    _add_config_args(replay)
    replay.set_defaults(run=cmd_replay)

    config = commands.add_parser("config", help="print the effective configuration and its hash")
    _add_config_args(config)
    config.set_defaults(run=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as exc:
        print(f"sizer: {exc}", file=sys.stderr)
        return 2
    except SizerError as exc:
        print(f"sizer: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
