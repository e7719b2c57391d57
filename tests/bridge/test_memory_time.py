"""npm @modelcontextprotocol/server-memory and PyPI mcp-server-time behind the bridge, driven by the
official MCP Python SDK in each revision (2025-06-18, 2025-11-25 sessions; 2026-07-28 stateless)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import mcp_types as types
import pytest
from conftest import MEMORY, REVISIONS, TIME, Bridge, module_bridge

pytestmark = pytest.mark.anyio


def text_of(result: types.CallToolResult) -> str:
    assert not result.is_error, result
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Bridge, Path]]:
    store = tmp_path_factory.mktemp("memory-store") / "memory.jsonl"
    for b in module_bridge(tmp_path_factory, "memory", MEMORY, {"MEMORY_FILE_PATH": str(store)}):
        yield b, store


@pytest.fixture(scope="module")
def clock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    yield from module_bridge(tmp_path_factory, "time", TIME)


@pytest.mark.parametrize("revision", REVISIONS)
async def test_memory_graph_round_trip(memory: tuple[Bridge, Path], connect, revision: str) -> None:
    bridge, store = memory
    name = f"entity-{revision}-{uuid.uuid4().hex[:8]}"
    async with connect(bridge.url, revision) as c:
        assert c.protocol_version == revision
        tools = {t.name for t in (await c.list_tools()).tools}
        assert {"create_entities", "read_graph", "search_nodes"} <= tools
        await c.call_tool(
            "create_entities",
            {"entities": [{"name": name, "entityType": "test", "observations": [f"seen over {revision}"]}]},
        )
        await c.call_tool("add_observations", {"observations": [{"entityName": name, "contents": ["again"]}]})
        found = text_of(await c.call_tool("search_nodes", {"query": name}))
        assert name in found and "again" in found
    # The server persisted what the client sent through the bridge.
    assert name in store.read_text()


async def test_memory_written_in_one_session_is_read_in_another(memory: tuple[Bridge, Path], connect) -> None:
    bridge, _ = memory
    name = f"shared-{uuid.uuid4().hex[:8]}"
    async with connect(bridge.url, "2025-11-25") as writer:
        await writer.call_tool("create_entities", {"entities": [{"name": name, "entityType": "t", "observations": []}]})
    async with connect(bridge.url, "2025-06-18") as reader:
        graph = text_of(await reader.call_tool("read_graph", {}))
    assert name in graph


@pytest.mark.parametrize("revision", REVISIONS)
async def test_time_tools(clock: Bridge, connect, revision: str) -> None:
    async with connect(clock.url, revision) as c:
        assert c.protocol_version == revision
        assert {t.name for t in (await c.list_tools()).tools} >= {"get_current_time", "convert_time"}
        now = json.loads(text_of(await c.call_tool("get_current_time", {"timezone": "UTC"})))
        assert now["timezone"] == "UTC" and "T" in now["datetime"]
        converted = json.loads(
            text_of(
                await c.call_tool(
                    "convert_time",
                    {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"},
                )
            )
        )
        assert converted["target"]["datetime"].split("T")[1].startswith("21:00")
