"""Baton's MCP server with the official `mcp` Python SDK, over both transports:
streamable HTTP (`BATON_URL/mcp`) and stdio (`BATON_BIN mcp --server BATON_URL`)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from mcp import types
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from _support import TIMEOUT_S, Rest

BUILTIN_TOOLS = {"run_claude_agent", "submit_job", "get_job", "cancel_job", "list_jobs"}
TERMINAL = {"completed", "failed", "dead", "cancelled"}

Connect = Callable[..., Any]


def run(test: Callable[[], Awaitable[None]], timeout_s: float = TIMEOUT_S) -> None:
    """Runs one async test body, bounded."""

    async def bounded() -> None:
        with anyio.fail_after(timeout_s):
            await test()

    anyio.run(bounded)


@pytest.fixture(params=["http", "stdio"])
def transport(request) -> str:
    return request.param


@pytest.fixture()
def connect(transport: str, baton_url: str, api_key: str, baton_bin: str) -> Connect:
    """`async with connect(**client_kwargs) as client`: an initialized MCP client of Baton."""

    @asynccontextmanager
    async def open_client(**kwargs: Any) -> AsyncIterator[Client]:
        kwargs.setdefault("read_timeout_seconds", TIMEOUT_S)
        if transport == "http":
            async with httpx2.AsyncClient(
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=httpx2.Timeout(TIMEOUT_S, read=60.0),
            ) as http:
                async with Client(streamable_http_client(baton_url + "/mcp", http_client=http), **kwargs) as client:
                    yield client
        else:
            server = StdioServerParameters(
                command=baton_bin,
                args=["mcp", "--server", baton_url],
                env={"BATON_API_KEY": api_key},
            )
            async with Client(server, **kwargs) as client:
                yield client

    return open_client


def tool_arguments(tool: types.Tool, words: str) -> dict[str, Any]:
    """Arguments that satisfy an agent tool's input schema: every required string is `FAKE text <words>`."""
    schema = tool.input_schema
    args: dict[str, Any] = {}
    for name in schema.get("required", []):
        prop = (schema.get("properties") or {}).get(name, {})
        kind = prop.get("type", "string")
        if "enum" in prop:
            args[name] = prop["enum"][0]
        elif kind == "string":
            args[name] = f"FAKE text {words}"
        elif kind in ("integer", "number"):
            args[name] = prop.get("minimum", 1)
        elif kind == "boolean":
            args[name] = True
        elif kind == "array":
            args[name] = []
        else:
            args[name] = {}
    return args


def text_of(result: types.CallToolResult) -> str:
    texts = [c.text for c in result.content if isinstance(c, types.TextContent)]
    assert texts, f"the tool result has no text content: {result}"
    return "".join(texts)


async def wait_job(rest: Rest, pred, timeout_s: float = 10.0, what: str = "a job") -> dict[str, Any]:
    """Polls the recent jobs until one matches `pred`, without blocking the event loop for long."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = rest.find_job(pred)
        if job is not None:
            return job
        if time.monotonic() > deadline:
            recent = [(j["id"], j["state"], rest.prompt_of(j)) for j in rest.recent_jobs(5)]
            raise AssertionError(f"{what} did not show up within {timeout_s}s; recent jobs: {recent}")
        await anyio.sleep(0.2)


def test_initialize_and_list_tools(connect: Connect, rest: Rest, agent_name: str):
    async def body() -> None:
        async with connect() as client:
            assert client.server_info is not None and client.server_info.name == "baton"
            assert client.server_capabilities.tools is not None
            assert client.server_capabilities.tools.list_changed is True

            tools = {t.name: t for t in (await client.list_tools()).tools}
            missing = (BUILTIN_TOOLS | {agent_name}) - tools.keys()
            assert not missing, f"missing tools {missing}; listed {sorted(tools)}"

            # The agent's tool takes the agent's input schema.
            agent = rest.http.get(f"/v1/agents/{agent_name}").json()
            assert tools[agent_name].input_schema == agent["input_schema"]
            assert tools["run_claude_agent"].input_schema["required"] == ["prompt"]
            assert tools["get_job"].input_schema["required"] == ["job_id"]

    run(body)


def test_run_claude_agent_with_progress(connect: Connect, rest: Rest):
    async def body() -> None:
        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append((value, total, message))

        async with connect() as client:
            result = await client.call_tool(
                "run_claude_agent", {"prompt": "FAKE text hello mcp"}, progress_callback=on_progress
            )

        assert result.is_error is False
        payload = json.loads(text_of(result))
        assert payload["result"] == "hello mcp"
        assert set(payload) >= {"result", "usage", "cost_usd", "job_id", "session_id"}
        assert result.structured_content == payload

        assert progress, "no progress notification arrived"
        values = [p[0] for p in progress]
        assert values == sorted(values) and len(set(values)) == len(values), values

        job = rest.get_job(payload["job_id"])
        assert job["state"] == "completed"
        assert job["result"] == "hello mcp"
        assert job["session_id"] == payload["session_id"]
        assert rest.prompt_of(job) == "FAKE text hello mcp"

    run(body)


def test_agent_tool(connect: Connect, rest: Rest, agent_name: str, tag: str):
    async def body() -> None:
        progress: list[float] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(value)

        async with connect() as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert agent_name in tools
            result = await client.call_tool(
                agent_name, tool_arguments(tools[agent_name], f"agent says {tag}"), progress_callback=on_progress
            )

        assert result.is_error is False
        text = text_of(result)
        assert text.strip(), f"the agent answered nothing: {result}"
        assert progress, "no progress notification arrived for the agent's run"
        assert progress == sorted(progress), progress

        job = rest.find_job(lambda j: (j.get("agent") or {}).get("name") == agent_name and j.get("result") == text)
        assert job is not None, f"no job of agent {agent_name} answered {text!r}"
        assert job["state"] == "completed"

    run(body)


def test_submit_get_job(connect: Connect, rest: Rest, tag: str):
    async def body() -> None:
        async with connect() as client:
            submitted = await client.call_tool("submit_job", {"prompt": f"FAKE text submitted {tag}"})
            assert submitted.is_error is False
            job_id = submitted.structured_content["id"]
            deadline = time.monotonic() + 10
            while True:
                got = await client.call_tool("get_job", {"job_id": job_id})
                assert got.is_error is False
                if got.structured_content["state"] in TERMINAL:
                    break
                assert time.monotonic() < deadline, f"job {job_id} is still {got.structured_content['state']}"
                await anyio.sleep(0.2)

        assert got.structured_content["id"] == job_id
        assert got.structured_content["state"] == "completed"
        assert got.structured_content["result"] == f"submitted {tag}"
        assert rest.get_job(job_id)["state"] == "completed"

    run(body)


def test_bad_arguments_are_errors_and_queue_nothing(connect: Connect, rest: Rest, agent_name: str):
    async def body() -> None:
        async with connect() as client:
            before = rest.newest_job_id()

            with pytest.raises(MCPError):
                await client.call_tool("get_job", {"nope": 1})
            with pytest.raises(MCPError):
                # The agent's tool without its required field(s).
                await client.call_tool(agent_name, {})
            with pytest.raises(MCPError):
                await client.call_tool("run_claude_agent", {})
            with pytest.raises(MCPError):
                await client.call_tool("submit_job", {"prompt": ""})

            assert rest.newest_job_id() == before, "a call with bad arguments queued a job"
            listed = await client.call_tool("list_jobs", {"limit": 1})
            assert listed.is_error is False
            data = listed.structured_content["data"]
            assert (data[0]["id"] if data else None) == before

    run(body)


def test_cancel_call_cancels_job(connect: Connect, rest: Rest, tag: str):
    prompt = f"FAKE sleep 20000\nFAKE text late {tag}"

    async def body() -> None:
        async with connect() as client:
            with anyio.move_on_after(1.0) as scope:
                await client.call_tool("run_claude_agent", {"prompt": prompt})
            assert scope.cancelled_caught, "the call finished before it was cancelled"

            # With the session still open: the job Baton ran for the call ends cancelled.
            job = await wait_job(rest, lambda j: rest.prompt_of(j) == prompt, what="the job of the call")
            job = await wait_job(
                rest,
                lambda j: j["id"] == job["id"] and j["state"] in TERMINAL,
                timeout_s=10.0,
                what=f"the end of job {job['id']}",
            )
            assert job["state"] == "cancelled", f"job {job['id']} ended {job['state']}: {job.get('error')}"

    run(body)


# How long a session may take to see an agent change: more than two of its looks at the
# agents (every 2 s over HTTP; every 10 s over stdio, where each look is a request to the
# server).
LIST_CHANGED_WITHIN_S = {"http": 10.0, "stdio": 25.0}


def test_tools_list_changed(connect: Connect, rest: Rest, tag: str, transport: str):
    name = f"pyt-lc-{tag}"
    within = LIST_CHANGED_WITHIN_S[transport]

    async def body() -> None:
        changed = anyio.Event()
        seen: list[str] = []

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                seen.append(message.method)
                changed.set()

        async with connect(message_handler=on_message) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert name not in tools
            await anyio.sleep(0.2)

            rest.create_agent(
                {
                    "name": name,
                    "description": "Made by the list_changed test",
                    "prompt_template": "{{ input.prompt }}",
                    "input_schema": {
                        "type": "object",
                        "properties": {"prompt": {"type": "string"}},
                        "required": ["prompt"],
                    },
                }
            )
            try:
                with anyio.move_on_after(within):
                    await changed.wait()
                assert changed.is_set(), f"no notifications/tools/list_changed within {within} s of creating an agent"
                tools = {t.name for t in (await client.list_tools(cache_mode="refresh")).tools}
                assert name in tools

                changed = anyio.Event()
                rest.delete_agent(name)
                with anyio.move_on_after(within):
                    await changed.wait()
                assert changed.is_set(), f"no notifications/tools/list_changed within {within} s of deleting an agent"
                tools = {t.name for t in (await client.list_tools(cache_mode="refresh")).tools}
                assert name not in tools
            finally:
                rest.delete_agent(name)

    run(body, timeout_s=TIMEOUT_S + 2 * within)
