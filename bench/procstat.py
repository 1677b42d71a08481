"""CPU and memory of process trees from /proc, for CPU per message.

A tree's CPU is the sum over its live processes of utime + stime + cutime + cstime: the
children it has reaped are in its cutime/cstime, the live ones are counted themselves, so a
child that exits between two snapshots moves from one term to the other and the difference
between two snapshots stays right."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    ticks: int  # utime + stime + cutime + cstime
    rss_bytes: int


def parse_stat(text: str) -> ProcStat:
    """One /proc/PID/stat line. The command name is in parentheses and may hold spaces or
    parentheses itself: the fields start after the last ")"."""
    head, _, rest = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    fields = rest.split()
    # fields[0] is field 3 (state): ppid is field 4, utime..cstime fields 14-17, rss field 24.
    ppid = int(fields[1])
    ticks = sum(int(fields[i]) for i in range(11, 15))
    rss = int(fields[21]) * PAGE_SIZE
    return ProcStat(pid=pid, ppid=ppid, ticks=ticks, rss_bytes=rss)


Snapshot = Mapping[int, ProcStat]


def snapshot(proc: Path = Path("/proc")) -> dict[int, ProcStat]:
    """Every process readable now (a process may vanish while reading: skipped)."""
    result: dict[int, ProcStat] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            result[int(entry.name)] = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
    return result


def tree(snap: Snapshot, root: int) -> list[int]:
    """``root`` and all its descendants alive in ``snap``."""
    children: dict[int, list[int]] = {}
    for stat in snap.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: list[int] = []
    pending = [root] if root in snap else []
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return sorted(found)


def tree_ticks(snap: Snapshot, roots: Iterable[int]) -> int:
    pids = {pid for root in roots for pid in tree(snap, root)}
    return sum(snap[pid].ticks for pid in pids)


def tree_rss(snap: Snapshot, roots: Iterable[int]) -> int:
    pids = {pid for root in roots for pid in tree(snap, root)}
    return sum(snap[pid].rss_bytes for pid in pids)


def cpu_seconds(before: Snapshot, after: Snapshot, roots: Iterable[int]) -> float:
    """CPU seconds the trees of ``roots`` used between the snapshots."""
    listed = list(roots)
    return (tree_ticks(after, listed) - tree_ticks(before, listed)) / CLOCK_TICKS
