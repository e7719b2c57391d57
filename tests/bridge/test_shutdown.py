"""Process faults with the official SDK and real servers: SIGTERM with sessions open (the bridge
drains, stops every child and exits 0; nothing is left in the process table, not even a zombie),
and a server killed in the middle of a tool call."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest
from conftest import EVERYTHING, MEMORY, TIME

pytestmark = pytest.mark.anyio


def parents() -> dict[int, int]:
    """pid → parent pid, from /proc."""
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            found[int(entry)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    return found


def children(pid: int) -> list[int]:
    return [p for p, parent in parents().items() if parent == pid]


def descendants(pid: int) -> set[int]:
    table = parents()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in table.items() if pp in frontier} - found
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
    # Isolation `session` keeps a warm pool (a warm child belongs to no user yet).
    b = bridge_factory(child, flags=["--isolation", "session"], env={"MEMORY_FILE_PATH": str(tmp_path / "m.jsonl")})
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


async def test_a_killed_server_fails_the_call_at_once_and_the_client_starts_over(bridge_factory, connect) -> None:
    from mcp.shared.exceptions import MCPError

    # No pool: the session's child is the bridge's only child once the startup probe is gone.
    b = bridge_factory(EVERYTHING, flags=["--pool-size", "0"])
    with anyio.fail_after(30):
        while children(b.proc.pid):
            await anyio.sleep(0.05)
    failure: list[MCPError] = []
    async with connect(b.url, "2025-11-25") as c:
        (pid,) = children(b.proc.pid)
        working = anyio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            working.set()

        async def long_call() -> None:
            try:
                await c.call_tool(
                    "trigger-long-running-operation", {"duration": 600, "steps": 600}, progress_callback=on_progress
                )
            except MCPError as e:
                failure.append(e)

        with anyio.fail_after(60):  # a safety net: without the bridge's error the call would hang
            async with anyio.create_task_group() as tg:
                tg.start_soon(long_call)
                await working.wait()
                os.kill(pid, signal.SIGKILL)
    assert failure and failure[0].error.code == -32000, failure
    # The session is gone; a new one gets a new server process.
    async with connect(b.url, "2025-11-25") as again:
        assert "Echo: back" in str((await again.call_tool("echo", {"message": "back"})).content)
