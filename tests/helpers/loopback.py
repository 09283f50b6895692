"""Loopback plumbing for the helper servers: free ports, waiting for a listener, stopping."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import TypeVar

__all__ = [
    "HOST",
    "LoopbackPart",
    "ProcessPart",
    "free_port",
    "port_open",
    "stop_process",
    "tail",
    "wait_listening",
]

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = HOST) -> bool:
    """Whether something accepts TCP connections on ``host:port`` now."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file (empty if it is missing)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_listening(
    port: int, what: str, timeout_s: float = 10.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until ``127.0.0.1:port`` accepts; ``RuntimeError`` if ``process`` exits first or
    nothing listens within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before listening")
        if port_open(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {HOST}:{port} within {timeout_s:g} s")


def stop_process(
    process: subprocess.Popen[bytes], kill: bool = False, timeout_s: float = 5.0
) -> None:
    """End ``process`` (SIGTERM, or SIGKILL with ``kill``; SIGKILL after ``timeout_s``), reap
    it and close its pipes."""
    if process.poll() is None:
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


P = TypeVar("P", bound="LoopbackPart")


class LoopbackPart:
    """A helper server or client on loopback: a context manager that starts it and always
    closes it (also when starting fails)."""

    def start(self: P) -> P:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: P) -> P:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ProcessPart(LoopbackPart):
    """A helper server run as a process listening on ``port``, with files in ``_dir``."""

    port: int
    _process: subprocess.Popen[bytes] | None
    _dir: Path | None

    def stop(self, kill: bool = False) -> None:
        """End the process (SIGTERM, or SIGKILL with ``kill``) and wait until the port closes."""
        if self._process is None:
            return
        stop_process(self._process, kill=kill)
        self._process = None
        deadline = time.monotonic() + 5.0
        while self.port and port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self: P) -> P:
        """Stop (if running) and start again on the same port."""
        assert isinstance(self, ProcessPart)
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the process and delete its files."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
