"""Ports for the listeners that tests and benchmarks start: never the same one twice."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streams import ports
from streams.ports import free_port, free_ports

ROOT = Path(__file__).resolve().parents[2]


def test_one_reservation_never_repeats_a_port_and_each_can_be_listened_on():
    picked = free_ports(8)
    assert len(set(picked)) == 8
    listeners = []
    try:
        for port in picked:  # every one was free: all can listen at the same time
            sock = socket.socket()
            sock.bind(("127.0.0.1", port))
            sock.listen()
            listeners.append(sock)
    finally:
        for sock in listeners:
            sock.close()


def kernel_offering(monkeypatch, reserved_dir, offers) -> None:
    """Sockets whose bind(port 0) gets the next port of `offers`, with this process's
    reservations empty and kept under `reserved_dir`."""

    class Offering:
        def __init__(self, *args) -> None:
            self.port = 0

        def bind(self, address: tuple[str, int]) -> None:
            self.port = next(offers)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

        def close(self) -> None:
            pass

    monkeypatch.setattr(ports, "_RESERVED_DIR", reserved_dir)
    monkeypatch.setattr(ports, "_handed_out", set())
    monkeypatch.setattr(ports.socket, "socket", Offering)


def test_no_port_is_handed_out_twice_across_calls_even_when_the_kernel_offers_it_again(monkeypatch, tmp_path):
    # a kernel that offers the same few ports over and over (as bind(port 0) may once a
    # socket is closed): the allocator must still answer distinct ports, or run out
    offers = iter([40001, 40001, 40002, 40001, 40002, 40003, 40003, 40004])

    kernel_offering(monkeypatch, tmp_path, offers)
    assert free_ports(2) == [40001, 40002]
    assert free_port() == 40003
    assert free_port() == 40004
    with pytest.raises(StopIteration):  # offers exhausted: never a repeat
        free_port()


def test_a_count_below_one_is_refused():
    with pytest.raises(ValueError):
        free_ports(0)


def test_a_port_another_process_has_handed_out_is_not_handed_out_here(tmp_path, monkeypatch):
    # a benchmark, a colleague's test session or the offline suite picks ports at the same
    # time as this one: a port it handed out (its listener not yet bound) is not free here
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, pathlib\n"
        "from streams import ports\n"
        "ports._RESERVED_DIR = pathlib.Path(sys.argv[1])\n"
        "print(ports.free_port(), flush=True)\n"
        "time.sleep(60)\n"), str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        taken = int(child.stdout.readline())
        offers = iter([taken, taken + 1])
        kernel_offering(monkeypatch, tmp_path, offers)
        assert free_port() == taken + 1
    finally:
        child.kill()
        child.wait()
