"""Shared fixtures for the SDK compatibility tests.

The Rust harness starts a Baton server (with `fake-claude` as its CLI) and runs
these tests with:

- BATON_URL      the server's base URL, e.g. http://127.0.0.1:PORT (no trailing slash)
- BATON_API_KEY  a real API key, sent as the SDKs' api_key
- BATON_BIN      the baton binary, for `baton mcp` over stdio
- BATON_AGENT    the name of a saved agent the harness created
"""

from __future__ import annotations

import os
import sys
import uuid

import httpx2
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _support import TIMEOUT_S, Rest  # noqa: E402


def _env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.fail(f"the environment variable {name} must be set (see tests/python/conftest.py)")
    return value


@pytest.fixture(scope="session")
def baton_url() -> str:
    return _env("BATON_URL").rstrip("/")


@pytest.fixture(scope="session")
def api_key() -> str:
    return _env("BATON_API_KEY")


@pytest.fixture(scope="session")
def baton_bin() -> str:
    path = _env("BATON_BIN")
    assert os.access(path, os.X_OK), f"BATON_BIN={path!r} is not an executable"
    return path


@pytest.fixture(scope="session")
def agent_name() -> str:
    return _env("BATON_AGENT")


@pytest.fixture()
def tag() -> str:
    """A short token unique to one test, to tell its prompts and jobs apart."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def rest(baton_url: str, api_key: str):
    with httpx2.Client(
        base_url=baton_url,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=TIMEOUT_S,
    ) as client:
        yield Rest(client)


@pytest.fixture()
def prompt_agent(rest: Rest, tag: str):
    """A throwaway agent whose template is `{{ input.prompt }}` (what the compatible APIs send
    an agent), deleted after the test."""
    name = f"pyt-prompt-{tag}"
    rest.create_agent(
        {
            "name": name,
            "description": "Runs the prompt it is given",
            "prompt_template": "{{ input.prompt }}",
            "input_schema": {
                "type": "object",
                "properties": {"prompt": {"type": "string"}},
                "required": ["prompt"],
                "additionalProperties": False,
            },
        }
    )
    try:
        yield name
    finally:
        rest.delete_agent(name)
