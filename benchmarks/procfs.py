"""CPU time and resident memory of a whole process tree, read from Linux ``/proc``.

A peer server can be several processes (TorchServe: the CLI, a Java frontend and
Python workers), so every figure is summed over the root process and all its
descendants. CPU time includes ``cutime``/``cstime`` (children that exited and were
reaped), so a delta between two samples stays right when a worker restarts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TreeSample",
    "alive",
    "parse_stat",
    "parse_vm_rss",
    "process_cpu_seconds",
    "process_rss_mb",
    "sample_tree",
    "thread_cpu",
    "tree_pids",
]

PROC = Path("/proc")


@dataclass(frozen=True)
class TreeSample:
    """One reading of a process tree."""

    pids: tuple[int, ...]
    cpu_s: float
    rss_bytes: int


def _after_command(text: str) -> list[str]:
    """The fields of a ``stat`` file after the command name (field 3 onwards).

    The command name (field 2) may contain spaces and parentheses, so fields are
    counted after its last ``)``.
    """
    return text.rsplit(")", 1)[1].split()


def parse_stat(text: str) -> tuple[int, int]:
    """``(ppid, cpu ticks)`` from the text of ``/proc/PID/stat``: ppid is field 4,
    utime/stime/cutime/cstime 14-17."""
    rest = _after_command(text)
    return int(rest[1]), sum(int(v) for v in rest[11:15])


def parse_vm_rss(text: str) -> int:
    """Resident bytes from the text of ``/proc/PID/status`` (0 for a kernel thread or zombie)."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _read_stats(proc: Path) -> dict[int, tuple[int, int]]:
    stats: dict[int, tuple[int, int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stats[int(entry.name)] = parse_stat((entry / "stat").read_text())
        except (OSError, IndexError, ValueError):
            continue  # exited while we were reading
    return stats


def tree_pids(root: int, parents: dict[int, int]) -> tuple[int, ...]:
    """``root`` and all its descendants, given each pid's parent (breadth first)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    order: list[int] = []
    queue, seen = [root], {root}
    while queue and len(order) < 100_000:
        pid = queue.pop(0)
        order.append(pid)
        for child in sorted(children.get(pid, ())):
            if child not in seen:
                seen.add(child)
                queue.append(child)
    return tuple(order)


def sample_tree(root: int, proc: Path = PROC) -> TreeSample | None:
    """CPU seconds and resident bytes of ``root``'s tree (None if ``root`` is gone)."""
    stats = _read_stats(proc)
    if root not in stats:
        return None
    pids = tree_pids(root, {pid: ppid for pid, (ppid, _) in stats.items()})
    ticks = sum(stats[pid][1] for pid in pids if pid in stats)
    rss = 0
    for pid in pids:
        try:
            rss += parse_vm_rss((proc / str(pid) / "status").read_text())
        except OSError:
            continue
    return TreeSample(pids, ticks / os.sysconf("SC_CLK_TCK"), rss)


def process_cpu_seconds(pid: int, proc: Path = PROC) -> float | None:
    """CPU seconds of one process, its reaped children included (None when it is gone)."""
    try:
        _, ticks = parse_stat((proc / str(pid) / "stat").read_text())
    except (OSError, IndexError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def process_rss_mb(pid: int, proc: Path = PROC) -> float | None:
    """Resident memory of one process in MB (None when it is gone)."""
    try:
        return parse_vm_rss((proc / str(pid) / "status").read_text()) / 2**20
    except OSError:
        return None


def alive(pid: int, proc: Path = PROC) -> bool:
    """The process exists and is not a zombie."""
    try:
        return _after_command((proc / str(pid) / "stat").read_text())[0] != "Z"
    except (OSError, IndexError):
        return False


def thread_cpu(pid: int, proc: Path = PROC) -> dict[str, float]:
    """CPU seconds of each of ``pid``'s threads, summed by the name the OS shows for it
    (``/proc/PID/task/TID/comm``, trailing digits and ``-``/``_`` dropped). Empty if gone."""
    ticks = os.sysconf("SC_CLK_TCK")
    by_name: dict[str, float] = {}
    try:
        tasks = list((proc / str(pid) / "task").iterdir())
    except OSError:
        return by_name
    for task in tasks:
        try:
            name = (task / "comm").read_text().strip().rstrip("0123456789-_") or "?"
            rest = _after_command((task / "stat").read_text())
        except OSError:
            continue  # the thread ended while we read
        # utime and stime only: a thread's cutime/cstime are its process's, counted once each
        by_name[name] = by_name.get(name, 0.0) + (int(rest[11]) + int(rest[12])) / ticks
    return by_name
