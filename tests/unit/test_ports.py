"""Ports for the listeners that tests and benchmarks start: never the same one twice."""

from __future__ import annotations

import socket

import pytest

from streams import ports
from streams.ports import free_port, free_ports


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


def test_no_port_is_handed_out_twice_across_calls_even_when_the_kernel_offers_it_again(monkeypatch):
    # a kernel that offers the same few ports over and over (as bind(port 0) may once a
    # socket is closed): the allocator must still answer distinct ports, or run out
    offers = iter([40001, 40001, 40002, 40001, 40002, 40003, 40003, 40004])

    class Offering:
        def __init__(self) -> None:
            self.port = 0

        def bind(self, address: tuple[str, int]) -> None:
            self.port = next(offers)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

        def close(self) -> None:
            pass

    monkeypatch.setattr(ports, "_handed_out", set())
    monkeypatch.setattr(ports.socket, "socket", Offering)
    assert free_ports(2) == [40001, 40002]
    assert free_port() == 40003
    assert free_port() == 40004
    with pytest.raises(StopIteration):  # offers exhausted: never a repeat
        free_port()


def test_a_count_below_one_is_refused():
    with pytest.raises(ValueError):
        free_ports(0)
