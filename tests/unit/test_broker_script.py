"""deploy/broker/broker.sh `start` while a previous broker is still going away: it
waits for it, or says so in one line; it never reports a broker that is stopping.
A stand-in process plays the stopping broker (no Java here): the script's checks run
before it launches anything."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest
import sys
import threading
from pathlib import Path

from streams.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "broker" / "broker.sh"
# a broker that takes STOPPING_S to exit once asked (SIGTERM), as Kafka's controlled shutdown does
STOPPING_S = 1.0
STAND_IN = f"""
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (print("stopping", flush=True), time.sleep({STOPPING_S}), sys.exit(0)))
print("up", flush=True)
time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def env_for(home: Path, port: int, controller_port: int, **extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}, "KAFKA_HOME": str(home),
            "KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(controller_port), **extra}


def script(action: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), action], env=env, capture_output=True, text=True, timeout=60)


def stand_in_broker(home: Path) -> subprocess.Popen:
    """A process in the broker's place: its pid in the pid file, the release of this checkout,
    and a broker's arguments (kafka.Kafka on this home's server.properties)."""
    proc = subprocess.Popen([sys.executable, "-c", STAND_IN, "kafka.Kafka", str(home / "server.properties")],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "up"
    threading.Thread(target=proc.wait, daemon=True).start()  # reaped at once: no zombie answers kill -0
    home.mkdir(parents=True, exist_ok=True)
    (home / "broker.pid").write_text(f"{proc.pid}\n")
    pom = (ROOT / "deploy" / "pom.xml").read_text()
    (home / "broker.version").write_text(pom.split("<kafka.version>")[1].split("<")[0] + "\n")
    return proc


def test_start_while_the_previous_broker_is_stopping_waits_for_it_to_exit(tmp_path):
    home = tmp_path / "kafka"
    port, controller_port = free_ports(2)
    broker = stand_in_broker(home)
    # the port taken by something else once the stand-in is gone, so that `start`
    # stops before launching a broker (there is no Java here), and says why
    held = socket.create_server(("127.0.0.1", port))
    env = env_for(home, port, controller_port, KAFKA_STOP_WAIT_S="3")
    stopping = subprocess.Popen(["bash", str(SCRIPT), "stop"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        assert broker.stdout.readline().strip() == "stopping"  # asked to exit, not gone yet
        started = script("start", env)

        assert not alive(broker.pid), f"start returned ({started.stdout!r}) while the old broker was still up"
        assert f"the previous broker (pid {broker.pid}) is still stopping" in started.stderr
        assert started.returncode == 1 and started.stdout == ""
        assert started.stderr.splitlines()[-1] == (
            f"127.0.0.1:{port} is held by a process that is not the broker of {home} (another checkout's "
            f"broker?): stop it, or set KAFKA_PORT")
    finally:
        held.close()
        broker.kill()
        stopping.wait(timeout=30)


# a leading zero is no octal number: 08 is 8 s (bash arithmetic refused it, and the wait never ended)
@pytest.mark.parametrize("wait, seconds", [("1", 1), ("08", 8)])
def test_start_gives_up_in_one_line_on_a_broker_that_does_not_finish_stopping(tmp_path, wait, seconds):
    home = tmp_path / "kafka"
    port, controller_port = free_ports(2)
    broker = stand_in_broker(home)
    (home / "broker.stopping").write_text(f"{broker.pid}\n")  # a `stop` under way, the broker slower than the wait
    try:
        started = script("start", env_for(home, port, controller_port, KAFKA_STOP_WAIT_S=wait))

        assert started.returncode == 1 and started.stdout == ""
        assert started.stderr.splitlines()[-1] == (f"the previous broker (pid {broker.pid}) is still stopping "
                                                   f"after {seconds} s: start again once it has exited")
        assert alive(broker.pid)  # not touched
    finally:
        broker.kill()


def unrelated_process() -> subprocess.Popen:
    """A live process that is not a broker: what a stale pid file names once the old
    broker's pid has been reused (after a reboot, or a broker killed long ago)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(120)"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "up"
    threading.Thread(target=proc.wait, daemon=True).start()
    return proc


def stale_pid_file(home: Path, pid: int) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "broker.pid").write_text(f"{pid}\n")
    pom = (ROOT / "deploy" / "pom.xml").read_text()
    (home / "broker.version").write_text(pom.split("<kafka.version>")[1].split("<")[0] + "\n")


def test_stop_leaves_alone_a_process_that_took_a_stale_pid_files_number(tmp_path):
    home = tmp_path / "kafka"
    port, controller_port = free_ports(2)
    other = unrelated_process()
    stale_pid_file(home, other.pid)
    try:
        stopped = script("stop", env_for(home, port, controller_port))

        assert stopped.returncode == 0, stopped.stderr
        assert alive(other.pid), "broker.sh stop signalled a process that is not its broker"
        assert not (home / "broker.pid").exists()
    finally:
        other.kill()


def test_start_does_not_report_a_broker_for_a_stale_pid_file_naming_another_process(tmp_path):
    home = tmp_path / "kafka"
    port, controller_port = free_ports(2)
    other = unrelated_process()
    stale_pid_file(home, other.pid)
    # the port held by something else, so that `start` stops before launching Java and says why
    held = socket.create_server(("127.0.0.1", port))
    try:
        started = script("start", env_for(home, port, controller_port, KAFKA_STOP_WAIT_S="1"))
        status = script("status", env_for(home, port, controller_port))

        assert started.stdout == "", f"start reported a broker that is not running: {started.stdout!r}"
        assert started.returncode == 1
        assert started.stderr.splitlines()[-1] == (
            f"127.0.0.1:{port} is held by a process that is not the broker of {home} (another checkout's "
            f"broker?): stop it, or set KAFKA_PORT")
        assert status.returncode == 1 and status.stdout == ""
        assert alive(other.pid)
    finally:
        held.close()
        other.kill()


def test_a_bad_kafka_version_stops_the_test_run_in_one_line_before_any_test(tmp_path):
    # `make test KAFKA_VERSION=4.x` (a typo): said once, at collection, not as an error per
    # broker test after the whole offline suite has run
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}, "KAFKA_VERSION": "4.x"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/integration/test_kafka_rules.py", "tests/unit/test_ports.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr

    assert done.returncode != 0
    assert out.count("KAFKA_VERSION: a Kafka release such as") == 1, out
    pom = (ROOT / "deploy" / "pom.xml").read_text().split("<kafka.version>")[1].split("<")[0]
    assert f"KAFKA_VERSION: a Kafka release such as {pom}, not '4.x'" in out
    assert " passed" not in out and "ERROR tests/" not in out, out


def test_a_release_outside_the_supported_ones_is_refused_before_maven_in_one_line(tmp_path):
    # 3.8.1 resolves and starts, 5.0.0 does not exist yet: neither is a release the product is
    # tested on (3.9.x, 4.x); said at once, naming the setting and the rule, nothing resolved
    port, controller_port = free_ports(2)
    for version in ("3.8.1", "2.8.2", "5.0.0", "3.10.0"):
        env = env_for(tmp_path / "kafka", port, controller_port, KAFKA_VERSION=version,
                      KAFKA_LIBS=str(tmp_path / "libs"), PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
        (tmp_path / "bin").mkdir(exist_ok=True)
        (tmp_path / "bin" / "mvn").write_text(f"#!/bin/sh\ntouch {tmp_path}/mvn-ran\nexit 1\n")
        (tmp_path / "bin" / "mvn").chmod(0o755)
        for action in ("start", "resolve"):
            done = script(action, env)
            assert (done.returncode, done.stdout) == (2, ""), done.stderr
            assert done.stderr == (f"KAFKA_VERSION: a supported Kafka release, 3.9.x or 4.x (such as "
                                   f"{ROOT.joinpath('deploy/pom.xml').read_text().split('<kafka.version>')[1].split('<')[0]}"
                                   f"), not {version}\n")
    assert not (tmp_path / "mvn-ran").exists() and not (tmp_path / "kafka" / "broker.pid").exists()


@pytest.mark.parametrize("script_name", ["broker.sh", "cluster.sh"])
@pytest.mark.parametrize("setting, value", [("KAFKA_START_TIMEOUT_S", "1.5"), ("KAFKA_START_TIMEOUT_S", "-1"),
                                            ("KAFKA_START_TIMEOUT_S", "2m"), ("KAFKA_STOP_WAIT_S", "0.5"),
                                            ("KAFKA_STOP_WAIT_S", "$(id)")])
def test_a_wait_that_is_not_whole_seconds_is_refused_in_one_line_before_anything_starts(
        tmp_path, script_name, setting, value):
    port, controller_port = free_ports(2)
    env = env_for(tmp_path / "kafka", port, controller_port, **{setting: value},
                  KAFKA_CLUSTER_HOME=str(tmp_path / "cluster"), KAFKA_LIBS=str(tmp_path / "libs"),
                  PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "mvn").write_text(f"#!/bin/sh\ntouch {tmp_path}/mvn-ran\nexit 1\n")
    (tmp_path / "bin" / "mvn").chmod(0o755)

    done = subprocess.run(["bash", str(SCRIPT.with_name(script_name)), "start"], env=env,
                          capture_output=True, text=True, timeout=60)

    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr == f"{setting}: a whole number of seconds, not '{value}'\n"
    assert not (tmp_path / "mvn-ran").exists()
    assert not list(tmp_path.glob("**/broker.pid"))


@pytest.mark.parametrize("version", ["4", "3.8.1"])
def test_a_stop_is_never_refused_for_the_release_setting(tmp_path, version):
    # the release names the jars a start runs; a stop needs only the home's pid file
    home = tmp_path / "kafka"
    port, controller_port = free_ports(2)
    broker = stand_in_broker(home)
    try:
        stopped = script("stop", env_for(home, port, controller_port, KAFKA_VERSION=version, KAFKA_STOP_WAIT_S="10"))

        assert stopped.returncode == 0, stopped.stderr
        assert not alive(broker.pid)
    finally:
        broker.kill()


def fake_mvn(tmp_path: Path, log_line: str) -> dict[str, str]:
    """PATH with an `mvn` that prints `log_line` as Maven would and fails."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "mvn").write_text(f"#!/bin/sh\necho '{log_line}'\nexit 1\n")
    (bin_dir / "mvn").chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_a_release_maven_central_does_not_have_is_named_as_such(tmp_path):
    port, controller_port = free_ports(2)
    for line in ("[ERROR] Failed to execute goal on project local-kafka-broker: Could not resolve dependencies: "
                 "Could not find artifact org.apache.kafka:kafka_2.13:jar:4.0.99 in central (https://repo)",
                 "[ERROR] Failed to execute goal: The following artifacts could not be resolved: "
                 "org.apache.kafka:kafka_2.13:jar:4.0.99 was not found in https://repo during a previous attempt"):
        env = env_for(tmp_path / "kafka", port, controller_port, KAFKA_VERSION="4.0.99",
                      KAFKA_LIBS=str(tmp_path / "libs"), **fake_mvn(tmp_path, line))
        done = script("resolve", env)
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr == "Kafka 4.0.99: no such release on Maven Central (org.apache.kafka:kafka_2.13:4.0.99; " \
                              "KAFKA_VERSION)\n"


def test_maven_out_of_reach_is_said_with_its_own_error_line_not_as_a_missing_release(tmp_path):
    port, controller_port = free_ports(2)
    line = ("[ERROR] Plugin org.apache.maven.plugins:maven-dependency-plugin could not be resolved: "
            "repo.maven.apache.org: Temporary failure in name resolution")
    env = env_for(tmp_path / "kafka", port, controller_port, KAFKA_VERSION="4.4.0",
                  KAFKA_LIBS=str(tmp_path / "libs"), **fake_mvn(tmp_path, line))
    done = script("start", env)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (f"Kafka 4.4.0: Maven could not resolve its jars, offline or Maven Central out of reach? "
                           f"({line[:208]}; log: {tmp_path / 'libs'}.mvn.log)\n")
    assert not (tmp_path / "libs").exists() and not (tmp_path / "kafka" / "broker.pid").exists()


def test_jars_of_an_unsupported_release_given_as_kafka_libs_are_refused_naming_that_setting(tmp_path):
    # a Kafka image's libs: the release is the jars', whatever KAFKA_VERSION says
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "kafka_2.13-3.7.2.jar").write_bytes(b"")
    port, controller_port = free_ports(2)
    env = env_for(tmp_path / "kafka", port, controller_port, KAFKA_VERSION="4.4.0", KAFKA_LIBS=str(libs))
    done = script("start", env)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"KAFKA_LIBS ({libs}): a supported Kafka release, 3.9.x or 4.x (such as "), \
        done.stderr
    assert done.stderr.endswith("), not 3.7.2\n") and not (tmp_path / "kafka" / "broker.pid").exists()
