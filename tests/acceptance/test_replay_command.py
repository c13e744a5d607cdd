"""`sizer replay` as a command: bad lines, exit codes, determinism."""

import json
import subprocess
import sys
from pathlib import Path

from tests.builders import T0, instrument, journal_text, leg, signal

SIZER = [str(Path(sys.executable).with_name("sizer"))]


def run(*args, env=None):
    return subprocess.run([*SIZER, *args], capture_output=True, text=True, env=env, check=False)


def test_bad_lines_are_reported_with_their_number_and_processing_goes_on(tmp_path):
    path = tmp_path / "j.jsonl"
    good = journal_text([instrument("X", leg("XU", qty_step="0.01")), signal("p1", "X", "0.9", "10", T0)])
    bad_signal = signal("p1", "X", "1.5", "10", T0)
    path.write_text(good + "{oops\n" + json.dumps(bad_signal) + "\n" + '{"topic":"trades","value":{}}\n'
                    + journal_text([signal("p1", "X", "0.5", "10", T0 + 1)]))

    done = run("replay", "--journal", str(path))

    assert done.returncode == 0
    decisions = [json.loads(line) for line in done.stdout.splitlines()]
    assert [d["notional"] for d in decisions] == ["930", "70"]
    errors = done.stderr.splitlines()
    assert errors[0].startswith(f"{path}:3: INVALID_JSON")
    assert errors[1] == f"{path}:4: INVALID_FIELD: score: Input should be less than or equal to 1"
    assert errors[2] == f"{path}:5: INVALID_FIELD: topic: must be one of instruments, signals, fills, controls, got 'trades'"


def test_unusable_arguments_or_configuration_exit_non_zero(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text("")
    assert run("replay", "--journal", str(tmp_path / "missing.jsonl")).returncode == 2
    assert run("replay", "--journal", str(path), "--preset", "bold").returncode == 2
    bad = run("replay", "--journal", str(path), env={"SIZING_PORTFOLIO_CAP": "0", "PATH": "/usr/bin"})
    assert bad.returncode == 2
    assert "portfolio_cap.usd: Input should be greater than 0" in bad.stderr


def test_replaying_the_same_journal_twice_is_byte_identical(tmp_path):
    from streams.demo_session import session
    from streams.wire import journal

    path = tmp_path / "demo.jsonl"
    path.write_text("".join(journal.line(topic, value) + "\n" for topic, value in session()))
    first = run("replay", "--journal", str(path), "--preset", "graduated")
    second = run("replay", "--journal", str(path), "--preset", "graduated")
    assert first.returncode == 0 and first.stdout
    assert first.stdout.encode() == second.stdout.encode()
