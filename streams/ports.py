"""Free TCP ports on loopback for the local brokers, workers and Prometheus that the
benchmarks and tests start: one place, so no two listeners get the same port, within
one process or across the processes of this machine that pick ports here (a test
session, the offline suite, a benchmark, another checkout's run)."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from pathlib import Path

_handed_out: set[int] = set()
_lock = threading.Lock()
# one file per port handed out, locked (flock) by the process that handed it out for as
# long as that process lives: the machine-wide reservation; the kernel drops the lock
# when the process exits, however it exits
_RESERVED_DIR = Path(tempfile.gettempdir()) / "sizer-ports"
_reservations: list[int] = []


def _reserve(port: int) -> bool:
    """Take `port`'s machine-wide reservation for this process; False when another
    live process holds it. Without flock (not POSIX) every port is this process's."""
    try:
        import fcntl
    except ImportError:
        return True
    _RESERVED_DIR.mkdir(exist_ok=True)
    try:
        os.chmod(_RESERVED_DIR, 0o1777)  # every user of the machine reserves here
    except OSError:
        pass
    fd = os.open(_RESERVED_DIR / str(port), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _reservations.append(fd)  # held open (not inherited by children) until this process exits
    return True


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports on `host` that were free a moment ago, none handed out
    before by this process or by another live process of this machine.

    All `count` sockets are bound at once and closed only after every number is read,
    so the kernel cannot give one port twice within a call; ports handed out by
    earlier calls, here or in another process (`_reserve`), are skipped (the listener
    they were meant for may not be bound yet). A process that picks ports some other
    way may still take one before its listener binds it.
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
                if port not in _handed_out and port not in ports and _reserve(port):
                    ports.append(port)
            _handed_out.update(ports)
            return ports
    finally:
        for sock in held:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One port, as `free_ports`."""
    return free_ports(1, host)[0]
