"""Which addresses a server's process tree listens on, from Linux ``/proc``.

The benchmark only measures servers that listen on loopback alone: the socket
inodes of every process in the tree (``/proc/PID/fd``) are looked up in
``/proc/net/tcp``, ``tcp6``, ``udp`` and ``udp6``; a listening TCP socket or a bound
UDP socket on any address outside 127.0.0.0/8 and ::1 (``0.0.0.0`` and ``::``
included) is reported.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from benchmarks.procfs import PROC, sample_tree

__all__ = ["Listener", "beyond_loopback", "listeners", "parse_net_table"]

TCP_LISTEN = "0A"
UDP_UNCONNECTED = "07"


@dataclass(frozen=True)
class Listener:
    """One listening (TCP) or bound (UDP) socket of the tree."""

    protocol: str
    address: str
    port: int
    pid: int

    @property
    def loopback(self) -> bool:
        ip = ipaddress.ip_address(self.address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.protocol} {host}:{self.port} (pid {self.pid})"


def _address(hex_address: str) -> str:
    """``/proc/net`` hex (little-endian 32-bit words) -> the address as text."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def parse_net_table(text: str, protocol: str) -> dict[int, tuple[str, int]]:
    """Socket inode -> (address, port) of the listening/bound entries of a ``/proc/net`` table."""
    wanted = TCP_LISTEN if protocol.startswith("tcp") else UDP_UNCONNECTED
    found: dict[int, tuple[str, int]] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != wanted:
            continue
        host, port = fields[1].split(":")
        found[int(fields[9])] = (_address(host), int(port, 16))
    return found


def _socket_inodes(pid: int, proc: Path) -> set[int]:
    inodes: set[int] = set()
    try:
        fds = list((proc / str(pid) / "fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def listeners(root: int, proc: Path = PROC) -> list[Listener]:
    """Every listening TCP and bound UDP socket of ``root``'s process tree."""
    sample = sample_tree(root, proc)
    if sample is None:
        return []
    tables: dict[int, tuple[str, str, int]] = {}
    for protocol in ("tcp", "tcp6", "udp", "udp6"):
        try:
            text = (proc / "net" / protocol).read_text()
        except OSError:
            continue
        for inode, (address, port) in parse_net_table(text, protocol).items():
            tables[inode] = (protocol, address, port)
    found: dict[tuple[str, str, int], Listener] = {}
    for pid in sample.pids:
        for inode in _socket_inodes(pid, proc):
            if inode in tables:
                protocol, address, port = tables[inode]
                found.setdefault((protocol, address, port), Listener(protocol, address, port, pid))
    return sorted(found.values(), key=lambda item: (item.protocol, item.port))


def beyond_loopback(root: int, proc: Path = PROC) -> list[Listener]:
    """The tree's sockets that listen on anything but loopback (empty = safe to load)."""
    return [item for item in listeners(root, proc) if not item.loopback]
