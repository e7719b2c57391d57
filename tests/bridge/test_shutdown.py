"""SIGTERM with SDK sessions open on real servers: the bridge drains, stops every child (and
anything those children started), and exits 0; nothing is left in the process table."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from conftest import EVERYTHING, MEMORY, TIME

pytestmark = pytest.mark.anyio


def descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


@pytest.mark.parametrize("child", [EVERYTHING, MEMORY, TIME], ids=["everything", "memory", "time"])
async def test_sigterm_with_sessions_open_leaves_no_child_behind(bridge_factory, connect, child, tmp_path) -> None:
    b = bridge_factory(child, env={"MEMORY_FILE_PATH": str(tmp_path / "m.jsonl")})
    async with connect(b.url, "2025-11-25") as one, connect(b.url, "2025-06-18") as two:
        await one.list_tools()
        await two.list_tools()
        procs = descendants(b.proc.pid)
        # Two sessions' children plus the warm pool.
        assert len(procs) >= 3, procs
        b.proc.send_signal(signal.SIGTERM)
        assert b.proc.wait(timeout=30) == 0, b.log_text()
    left = [p for p in procs if alive(p)]
    assert not left, f"children outlived the bridge: {left}"
    # The bridge reaped its own children before exiting: not even a zombie is left for init.
    unreaped = [p for p in procs if Path(f"/proc/{p}").exists()]
    assert not unreaped, f"children left as zombies: {unreaped}"
    assert "all children stopped" in b.log_text()
