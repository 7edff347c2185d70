"""Baton's OpenAI-compatible API (`/v1/chat/completions`, `/v1/models`) with the official
`openai` Python SDK."""

from __future__ import annotations

import openai
import pytest

from _support import TIMEOUT_S, Rest


@pytest.fixture(scope="module")
def client(baton_url: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=baton_url + "/v1", api_key=api_key, timeout=TIMEOUT_S, max_retries=0)


def extra(completion, field: str):
    """A Baton extension field (`job_id`, `session_id`) of a completion."""
    value = (completion.model_extra or {}).get(field)
    assert isinstance(value, str) and value, f"the completion has no {field}: {completion}"
    return value


def test_plain_create(client: openai.OpenAI, rest: Rest):
    completion = client.chat.completions.create(
        model="sonnet",
        messages=[{"role": "user", "content": "FAKE text hello there"}],
    )
    assert completion.object == "chat.completion"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "hello there"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens

    job = rest.get_job(extra(completion, "job_id"))
    assert job["state"] == "completed"
    assert rest.prompt_of(job) == "FAKE text hello there"
    assert job["session_id"] == extra(completion, "session_id")


def test_streamed_create(client: openai.OpenAI):
    prompt = [{"role": "user", "content": "FAKE slow 3 50"}]
    plain = client.chat.completions.create(model="sonnet", messages=prompt)
    expected = plain.choices[0].message.content
    assert expected == "chunk 1\n\nchunk 2\n\nchunk 3"

    stream = client.chat.completions.create(
        model="sonnet",
        messages=prompt,
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas: list[str] = []
    finish_reasons: list[str] = []
    usage_chunks = []
    roles: list[str] = []
    with stream:
        for chunk in stream:
            assert chunk.object == "chat.completion.chunk"
            if chunk.usage is not None:
                usage_chunks.append(chunk)
            for choice in chunk.choices:
                if choice.delta.role:
                    roles.append(choice.delta.role)
                if choice.delta.content:
                    deltas.append(choice.delta.content)
                if choice.finish_reason:
                    finish_reasons.append(choice.finish_reason)

    assert "".join(deltas) == expected
    assert len(deltas) > 1, f"the answer came in one delta: {deltas}"
    assert roles and roles[0] == "assistant"
    assert finish_reasons == ["stop"]
    # include_usage: one final chunk with the usage and no choices.
    assert len(usage_chunks) == 1, usage_chunks
    last = usage_chunks[0]
    assert last.choices == []
    assert last.usage.prompt_tokens > 0
    assert last.usage.completion_tokens > 0


def test_three_turn_conversation_resumes_one_session(client: openai.OpenAI, rest: Rest, tag: str):
    # The words are unique to this run, so no earlier conversation can match.
    alpha, beta, gamma = f"alpha {tag}", f"beta {tag}", f"gamma {tag}"

    messages = [{"role": "user", "content": alpha}]
    first = client.chat.completions.create(model="sonnet", messages=messages)
    a1 = first.choices[0].message.content
    assert a1 == f"fake answer to: {alpha}"

    messages += [{"role": "assistant", "content": a1}, {"role": "user", "content": beta}]
    second = client.chat.completions.create(model="sonnet", messages=messages)
    a2 = second.choices[0].message.content
    assert a2 == f"I remember: {alpha}"

    messages += [{"role": "assistant", "content": a2}, {"role": "user", "content": gamma}]
    third = client.chat.completions.create(model="sonnet", messages=messages)
    assert third.choices[0].message.content == f"I remember: {alpha} | {beta}"

    sessions = [extra(c, "session_id") for c in (first, second, third)]
    assert len(set(sessions)) == 1, f"the turns ran in different sessions: {sessions}"

    jobs = [rest.get_job(extra(c, "job_id")) for c in (first, second, third)]
    assert len({j["id"] for j in jobs}) == 3
    # Each resumed turn sends Claude only the new message.
    assert [rest.prompt_of(j) for j in jobs] == [alpha, beta, gamma]
    assert [j["session_id"] for j in jobs] == sessions
    assert [j["state"] for j in jobs] == ["completed"] * 3


def test_streamed_turn_resumes_session(client: openai.OpenAI, tag: str):
    first_words, second_words = f"first {tag}", f"second {tag}"
    messages = [{"role": "user", "content": first_words}]
    first = client.chat.completions.create(model="sonnet", messages=messages)
    answer = first.choices[0].message.content
    assert answer == f"fake answer to: {first_words}"

    messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": second_words}]
    stream = client.chat.completions.create(model="sonnet", messages=messages, stream=True)
    with stream:
        text = "".join(c.delta.content or "" for chunk in stream for c in chunk.choices)
    assert text == f"I remember: {first_words}"


def test_system_message_becomes_system_prompt(client: openai.OpenAI, rest: Rest, tag: str):
    system = f"You are terse ({tag})."
    completion = client.chat.completions.create(
        model="sonnet",
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": "FAKE text with a system prompt"},
        ],
    )
    assert completion.choices[0].message.content == "with a system prompt"
    job = rest.get_job(extra(completion, "job_id"))
    assert rest.system_prompt_of(job) == system
    assert rest.prompt_of(job) == "FAKE text with a system prompt"


def test_models_list(client: openai.OpenAI, agent_name: str):
    ids = [m.id for m in client.models.list()]
    for model in ("opus", "sonnet", "haiku", f"agent/{agent_name}"):
        assert model in ids, f"{model} is not in {ids}"


def test_agent_as_model(client: openai.OpenAI, rest: Rest, prompt_agent: str):
    completion = client.chat.completions.create(
        model=f"agent/{prompt_agent}",
        messages=[{"role": "user", "content": "FAKE text from the agent"}],
    )
    assert completion.choices[0].message.content == "from the agent"
    job = rest.get_job(extra(completion, "job_id"))
    assert job["state"] == "completed"
    assert (job.get("agent") or {}).get("name") == prompt_agent


def test_unknown_model_is_not_found(client: openai.OpenAI):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(
            model="no-such-model",
            messages=[{"role": "user", "content": "FAKE text never"}],
        )
    assert err.value.status_code == 404
    assert err.value.code == "model_not_found"


def test_tools_param_is_bad_request(client: openai.OpenAI):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="sonnet",
            messages=[{"role": "user", "content": "FAKE text never"}],
            tools=[
                {
                    "type": "function",
                    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
                }
            ],
        )
    assert err.value.status_code == 400


def test_tool_call_turn_is_bad_request(client: openai.OpenAI):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="sonnet",
            messages=[
                {"role": "user", "content": "look it up"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            ],
        )
    assert err.value.status_code == 400
