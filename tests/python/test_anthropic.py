"""Baton's Anthropic-compatible API (`/v1/messages`) with the official `anthropic` Python SDK."""

from __future__ import annotations

import anthropic
import pytest

from _support import TIMEOUT_S, Rest

# A 1x1 transparent PNG.
PNG_1X1 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


@pytest.fixture(scope="module")
def client(baton_url: str, api_key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=baton_url, api_key=api_key, timeout=TIMEOUT_S, max_retries=0)


def test_plain_create(client: anthropic.Anthropic, rest: Rest):
    message = client.messages.create(
        model="sonnet",
        max_tokens=1024,
        messages=[{"role": "user", "content": "FAKE text hi anthropic"}],
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert len(message.content) == 1
    assert message.content[0].type == "text"
    assert message.content[0].text == "hi anthropic"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0

    job_id = (message.model_extra or {}).get("job_id")
    assert job_id, f"the message has no job_id: {message}"
    job = rest.get_job(job_id)
    assert job["state"] == "completed"
    assert rest.prompt_of(job) == "FAKE text hi anthropic"


def test_system_becomes_system_prompt(client: anthropic.Anthropic, rest: Rest, tag: str):
    system = f"Answer briefly ({tag})."
    message = client.messages.create(
        model="sonnet",
        max_tokens=1024,
        system=system,
        messages=[{"role": "user", "content": "FAKE text with a system"}],
    )
    assert message.content[0].text == "with a system"
    job = rest.get_job((message.model_extra or {})["job_id"])
    assert rest.system_prompt_of(job) == system


def test_conversation_resumes_session(client: anthropic.Anthropic, rest: Rest, tag: str):
    one, two, three = f"one {tag}", f"two {tag}", f"three {tag}"
    messages: list = [{"role": "user", "content": one}]
    m1 = client.messages.create(model="sonnet", max_tokens=1024, messages=messages)
    assert m1.content[0].text == f"fake answer to: {one}"

    messages += [{"role": "assistant", "content": m1.content[0].text}, {"role": "user", "content": two}]
    m2 = client.messages.create(model="sonnet", max_tokens=1024, messages=messages)
    assert m2.content[0].text == f"I remember: {one}"

    # The third turn in content-block form, streamed.
    messages += [
        {"role": "assistant", "content": [{"type": "text", "text": m2.content[0].text}]},
        {"role": "user", "content": [{"type": "text", "text": three}]},
    ]
    with client.messages.stream(model="sonnet", max_tokens=1024, messages=messages) as stream:
        final = stream.get_final_message()
    assert [b.text for b in final.content] == [f"I remember: {one} | {two}"]

    sessions = [(m.model_extra or {}).get("session_id") for m in (m1, m2)]
    assert sessions[0] and sessions[0] == sessions[1], sessions
    job2 = rest.get_job((m2.model_extra or {})["job_id"])
    assert rest.prompt_of(job2) == two


def test_stream_accumulates_final_message(client: anthropic.Anthropic):
    with client.messages.stream(
        model="sonnet",
        max_tokens=1024,
        messages=[{"role": "user", "content": "FAKE slow 2 50"}],
    ) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()

    assert len(deltas) >= 2, deltas
    assert "".join(deltas) == "chunk 1chunk 2"
    assert [block.type for block in final.content] == ["text", "text"]
    assert [block.text for block in final.content] == ["chunk 1", "chunk 2"]
    assert final.role == "assistant"
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0
    assert final.usage.output_tokens > 0


def test_raw_stream_events(client: anthropic.Anthropic):
    events = list(
        client.messages.create(
            model="sonnet",
            max_tokens=1024,
            messages=[{"role": "user", "content": "FAKE slow 2 50"}],
            stream=True,
        )
    )
    types = [e.type for e in events]
    assert types[0] == "message_start"
    assert types[-1] == "message_stop"
    assert types.count("content_block_start") == 2
    assert types.count("content_block_stop") == 2
    assert "message_delta" in types
    text_by_index: dict[int, str] = {}
    for e in events:
        if e.type == "content_block_delta" and e.delta.type == "text_delta":
            text_by_index[e.index] = text_by_index.get(e.index, "") + e.delta.text
    assert text_by_index == {0: "chunk 1", 1: "chunk 2"}
    (message_delta,) = [e for e in events if e.type == "message_delta"]
    assert message_delta.delta.stop_reason == "end_turn"


def test_image_is_bad_request(client: anthropic.Anthropic):
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(
            model="sonnet",
            max_tokens=1024,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1X1}},
                        {"type": "text", "text": "FAKE text what is this"},
                    ],
                }
            ],
        )
    assert err.value.status_code == 400
    assert err.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_unknown_model_is_not_found(client: anthropic.Anthropic):
    with pytest.raises(anthropic.NotFoundError) as err:
        client.messages.create(
            model="no-such-model",
            max_tokens=1024,
            messages=[{"role": "user", "content": "FAKE text never"}],
        )
    assert err.value.status_code == 404
    assert err.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
