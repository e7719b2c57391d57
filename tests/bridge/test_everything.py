"""npm @modelcontextprotocol/server-everything behind the bridge, driven by the official MCP Python
SDK in each revision: tools, resources, prompts, progress, and the server-to-client round trips
(sampling, elicitation, roots) of the session revisions."""

from __future__ import annotations

import json

import anyio
import httpx
import mcp_types as types
import pytest
from conftest import IDENTITY, REVISIONS, Bridge

pytestmark = pytest.mark.anyio

SESSION_REVISIONS = [r for r in REVISIONS if r != "2026-07-28"]


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


@pytest.mark.parametrize("revision", REVISIONS)
async def test_tools_resources_prompts(everything: Bridge, connect, revision: str) -> None:
    async with connect(everything.url, revision) as c:
        assert c.protocol_version == revision
        assert c.server_info is not None and "everything" in c.server_info.name
        names = {t.name for t in (await c.list_tools()).tools}
        assert {"echo", "get-sum", "trigger-long-running-operation"} <= names
        assert text_of(await c.call_tool("echo", {"message": "über ✓"})) == "Echo: über ✓"
        assert "5" in text_of(await c.call_tool("get-sum", {"a": 2, "b": 3}))

        resources = (await c.list_resources()).resources
        assert resources
        first = await c.read_resource(resources[0].uri)
        assert first.contents and first.contents[0].uri == resources[0].uri
        templates = (await c.list_resource_templates()).resource_templates
        assert any("{resourceId}" in t.uri_template for t in templates)

        prompts = {p.name for p in (await c.list_prompts()).prompts}
        assert {"simple-prompt", "args-prompt"} <= prompts
        got = await c.get_prompt("args-prompt", {"city": "Lyon", "state": "Rhône"})
        assert "Lyon" in json.dumps(got.model_dump(mode="json"), ensure_ascii=False)


@pytest.mark.parametrize("revision", REVISIONS)
async def test_progress_notifications_reach_the_caller(everything: Bridge, connect, revision: str) -> None:
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    async with connect(everything.url, revision) as c:
        result = await c.call_tool(
            "trigger-long-running-operation", {"duration": 0.3, "steps": 3}, progress_callback=on_progress
        )
        assert "completed" in text_of(result).lower()
    assert [p for p, _ in seen] == [1, 2, 3]
    assert all(t == 3 for _, t in seen)


@pytest.mark.parametrize("revision", SESSION_REVISIONS)
async def test_sampling_elicitation_and_roots_round_trips(everything: Bridge, connect, revision: str) -> None:
    asked: dict[str, object] = {}

    async def sampling(ctx, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked["sampling"] = params.messages[0].content
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="sampled by the test client"),
            model="test-model",
        )

    async def elicitation(ctx, params) -> types.ElicitResult:
        asked["elicitation"] = params.message
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async def roots(ctx) -> types.ListRootsResult:
        asked["roots"] = True
        return types.ListRootsResult(roots=[types.Root(uri="file:///srv/project", name="project")])

    async with connect(
        everything.url, revision, sampling_callback=sampling, elicitation_callback=elicitation, list_roots_callback=roots
    ) as c:
        sampled = await c.call_tool("trigger-sampling-request", {"prompt": "say hi", "maxTokens": 10})
        assert "sampled by the test client" in text_of(sampled)
        elicited = await c.call_tool("trigger-elicitation-request", {})
        assert "Ada" in text_of(elicited)
        listed = await c.call_tool("get-roots-list", {})
        assert "file:///srv/project" in text_of(listed)
    assert {"sampling", "elicitation", "roots"} <= asked.keys()


async def test_sampling_round_trip_travels_the_get_stream(everything: Bridge) -> None:
    """At the wire: the child's sampling request arrives on the session's GET stream, the client's
    answer is a POST (202), and the tool call that asked for it then completes."""
    headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-11-25"}
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {"sampling": {}},
            "clientInfo": {"name": "wire-test", "version": "0"},
        },
    }
    url = everything.url
    async with httpx.AsyncClient(timeout=30, headers=IDENTITY) as h:
        r = await h.post(url, json=init, headers=headers)
        assert r.status_code == 200
        headers["mcp-session-id"] = r.headers["mcp-session-id"]
        r = await h.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        assert r.status_code == 202
        async with h.stream("GET", url, headers={**headers, "accept": "text/event-stream"}) as get:
            assert get.status_code == 200
            call = {
                "jsonrpc": "2.0",
                "id": 41,
                "method": "tools/call",
                "params": {"name": "trigger-sampling-request", "arguments": {"prompt": "hi", "maxTokens": 5}},
            }
            async with anyio.create_task_group() as tg:
                answer: dict = {}

                async def call_tool() -> None:
                    resp = await h.post(url, json=call, headers=headers)
                    answer.update(last_message(resp))

                tg.start_soon(call_tool)
                request = await next_request(get, "sampling/createMessage")
                reply = {
                    "jsonrpc": "2.0",
                    "id": request["id"],
                    "result": {
                        "role": "assistant",
                        "content": {"type": "text", "text": "from the GET stream"},
                        "model": "m",
                    },
                }
                assert (await h.post(url, json=reply, headers=headers)).status_code == 202
            assert answer["id"] == 41
            assert "from the GET stream" in json.dumps(answer["result"])
        assert (await h.delete(url, headers=headers)).status_code == 200


def last_message(resp: httpx.Response) -> dict:
    """The JSON-RPC response of a POST answered with JSON or SSE."""
    if resp.headers["content-type"].startswith("text/event-stream"):
        events = [json.loads(line[5:]) for line in resp.text.splitlines() if line.startswith("data:")]
        return events[-1]
    return resp.json()


async def next_request(stream: httpx.Response, method: str) -> dict:
    with anyio.fail_after(30):
        async for line in stream.aiter_lines():
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                if msg.get("method") == method:
                    return msg
    raise AssertionError(f"the GET stream ended before {method}")


async def test_modern_clients_get_a_clear_error_for_server_to_client_requests(everything: Bridge, connect) -> None:
    async with connect(everything.url, "2026-07-28") as c:
        result = await c.call_tool("trigger-sampling-request", {"prompt": "hi", "maxTokens": 5})
    assert result.is_error
    assert "2026-07-28" in text_of(result) and "no server-to-client requests" in text_of(result)


async def test_modern_listen_streams_resource_updates(bridge_factory, connect) -> None:
    from conftest import EVERYTHING

    b = bridge_factory(EVERYTHING)
    uri = "demo://resource/dynamic/text/1"
    async with connect(b.url, "2026-07-28") as c:
        async with c.listen(resource_subscriptions=[uri]) as sub:
            await c.call_tool("toggle-subscriber-updates", {})
            with anyio.fail_after(30):  # the server sends an update every 5 s
                async for event in sub:
                    assert getattr(event, "uri", None) == uri
                    break
