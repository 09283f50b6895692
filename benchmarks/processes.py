"""Servers as subprocesses: own process group, log to a file, always stopped.

Every server gets its own session (``start_new_session``), so ``stop`` can signal
the whole group (TorchServe's CLI, Java frontend and Python workers). Servers still
running when the interpreter exits (an exception, Ctrl-C) are stopped by ``atexit``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.procfs import alive, sample_tree

__all__ = ["Launch", "PortAllocator", "ServerProcess", "stop_all"]

_LIVE: list[ServerProcess] = []


@dataclass
class Launch:
    """How to start one server."""

    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)


class PortAllocator:
    """Free loopback ports: from ``first..last`` when given, else ephemeral ones."""

    def __init__(self, first: int | None = None, last: int | None = None) -> None:
        if first is not None and last is not None and not 0 < first <= last < 65536:
            raise ValueError(f"a port range needs 0 < first <= last < 65536, got {first}-{last}")
        if (first is None) != (last is None):
            raise ValueError("give both ends of the port range, or neither")
        self._next, self._last = first, last

    @staticmethod
    def _free(port: int) -> bool:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    def take(self) -> int:
        """One port nobody listens on right now."""
        if self._next is None or self._last is None:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port: int = sock.getsockname()[1]
                return port
        while self._next <= self._last:
            port, self._next = self._next, self._next + 1
            if self._free(port):
                return port
        raise RuntimeError(f"no free port left in the range up to {self._last}")


class ServerProcess:
    """A started server; ``stop()`` ends its whole process group."""

    def __init__(self, launch: Launch, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        env = {**os.environ, **launch.env}
        self.proc = subprocess.Popen(
            launch.argv,
            cwd=launch.cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        _LIVE.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        """The end of the server's output (for error messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _signal_tree(self, sig: signal.Signals, pids: tuple[int, ...]) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)
        for pid in pids:  # descendants that left the group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to the tree, SIGKILL after ``grace_s``; idempotent."""
        sample = sample_tree(self.proc.pid)
        pids = sample.pids if sample is not None else (self.proc.pid,)
        if self.alive():
            self._signal_tree(signal.SIGTERM, pids)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace_s)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.1)
        self._signal_tree(signal.SIGKILL, tuple(p for p in pids if alive(p)))
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._log.close()
        if self in _LIVE:
            _LIVE.remove(self)


def stop_all() -> None:
    """Stop every server this process started and has not stopped yet."""
    for server in list(_LIVE):
        server.stop(grace_s=5.0)


atexit.register(stop_all)
