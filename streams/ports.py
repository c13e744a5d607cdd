"""Free TCP ports on loopback for the local brokers, workers and Prometheus that the
benchmarks and tests start: one place, so no two listeners of one run get the same
port."""

from __future__ import annotations

import socket
import threading

_handed_out: set[int] = set()
_lock = threading.Lock()


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports on `host` that were free a moment ago, none handed out
    before by this process.

    All `count` sockets are bound at once and closed only after every number is read,
    so the kernel cannot give one port twice within a call; ports handed out by
    earlier calls are skipped (the listener they were meant for may not be bound
    yet). Another process may still take a port before its listener binds it.
    Raises OSError when no port can be bound."""
    if count < 1:
        raise ValueError(f"count: at least 1, not {count}")
    held: list[socket.socket] = []
    try:
        with _lock:
            ports: list[int] = []
            while len(ports) < count:
                sock = socket.socket()
                held.append(sock)
                sock.bind((host, 0))
                port = sock.getsockname()[1]
                # the sockets stay open, so the kernel offers none of them again here
                if port not in _handed_out and port not in ports:
                    ports.append(port)
            _handed_out.update(ports)
            return ports
    finally:
        for sock in held:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One port, as `free_ports`."""
    return free_ports(1, host)[0]
