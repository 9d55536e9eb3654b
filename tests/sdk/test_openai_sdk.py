"""The official OpenAI Python SDK against `clawgate gateway` (GW-1..3)."""

import json

import openai
import pytest

from conftest import TOKEN, FakeChat

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway, api_key=TOKEN, max_retries=0)


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert "default" in ids and "Tiny" in ids and "local/tiny" in ids


def test_chat_non_stream(client):
    r = client.chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": "hi"}])
    assert r.headers["x-clawgate-served-by"].startswith("local/tiny; host=127.0.0.1:")
    c = r.parse()
    msg = c.choices[0].message
    assert msg.content == "Hello from fake"
    assert msg.model_extra.get("reasoning_content") == "let me think"
    assert c.choices[0].finish_reason == "stop"
    assert c.usage.prompt_tokens == 11 and c.usage.completion_tokens == 4


def test_chat_stream_with_usage(client):
    stream = client.chat.completions.create(
        model="Tiny", messages=[{"role": "user", "content": "hi"}],
        stream=True, stream_options={"include_usage": True})
    content, reasoning, finish, usage = "", "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            content += ch.delta.content or ""
            reasoning += (ch.delta.model_extra or {}).get("reasoning_content") or ""
            finish = ch.finish_reason or finish
    assert content == "Hello from fake"
    assert reasoning == "let me think"
    assert finish == "stop"
    assert usage.total_tokens == 15


def test_tools_round_trip(client):
    messages = [{"role": "user", "content": "weather in Paris?"}]
    first = client.chat.completions.create(model="default", messages=messages, tools=TOOLS, tool_choice="auto")
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"})
    second = client.chat.completions.create(model="default", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "Sunny in Paris"
    sent = FakeChat.requests[-1]["body"]["messages"]
    assert sent[-1] == {"role": "tool", "content": "sunny, 21C", "tool_call_id": call.id}
    assert sent[-2]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_tools_stream_fragments(client):
    stream = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "weather?"}], tools=TOOLS, stream=True)
    args, name = "", None
    for chunk in stream:
        for ch in chunk.choices:
            for tc in ch.delta.tool_calls or []:
                name = tc.function.name or name
                args += tc.function.arguments or ""
    assert name == "get_weather"
    assert json.loads(args) == {"city": "Paris"}


def test_errors_map_to_sdk_exceptions(gateway):
    bad = openai.OpenAI(base_url=gateway, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}])
    good = openai.OpenAI(base_url=gateway, api_key=TOKEN, max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        good.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        good.chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}], temperature=5)
    assert e.value.body["param"] == "temperature"


RESP_TOOLS = [{"type": "function", "name": "get_weather", "description": "weather for a city",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


def test_responses_non_stream_with_function_call_round_trip(client):
    # Fields coding agents send are tolerated (store, include, prompt_cache_key, …).
    first = client.responses.create(
        model="default", input="weather in Paris?", tools=RESP_TOOLS, instructions="be brief",
        store=False, include=["reasoning.encrypted_content"], prompt_cache_key="k1",
        parallel_tool_calls=True, reasoning={"effort": "low"})
    calls = [o for o in first.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    second = client.responses.create(model="default", tools=RESP_TOOLS, input=[
        {"role": "user", "content": "weather in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
    ])
    assert second.output_text == "Sunny in Paris"
    assert second.usage.input_tokens == 11
    sent = FakeChat.requests[-1]["body"]
    assert sent["messages"][-1] == {"role": "tool", "content": "sunny", "tool_call_id": calls[0].call_id}
    assert "store" not in sent and "prompt_cache_key" not in sent


def test_responses_stream_event_sequence(client):
    types, text, reasoning, final = [], "", "", None
    with client.responses.stream(model="Tiny", input="hi") as s:
        for ev in s:
            types.append(ev.type)
            if ev.type == "response.output_text.delta":
                text += ev.delta
            if ev.type == "response.reasoning_text.delta":
                reasoning += ev.delta
        final = s.get_final_response()
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "response.output_item.added" in types and "response.output_text.done" in types
    assert text == "Hello from fake" and reasoning == "let me think"
    assert final.output_text == "Hello from fake"
    assert [o.type for o in final.output] == ["reasoning", "message"]


def test_responses_stream_function_call(client):
    args, name = "", None
    with client.responses.stream(model="default", input="weather?", tools=RESP_TOOLS) as s:
        for ev in s:
            if ev.type == "response.function_call_arguments.delta":
                args += ev.delta
            if ev.type == "response.output_item.added" and ev.item.type == "function_call":
                name = ev.item.name
    assert name == "get_weather"
    assert json.loads(args) == {"city": "Paris"}


def test_responses_previous_response_id_continues_the_conversation(client):
    first = client.responses.create(model="default", input="My name is Ana", store=True)
    assert first.id.startswith("resp_")
    second = client.responses.create(model="default", input="What is my name?",
                                     previous_response_id=first.id)
    sent = FakeChat.requests[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"], sent
    assert sent[0]["content"] == "My name is Ana"
    assert sent[1]["content"] == first.output_text
    assert sent[2]["content"] == "What is my name?"
    # Continuing a continuation keeps the whole conversation.
    client.responses.create(model="default", input="And again?", previous_response_id=second.id)
    assert len(FakeChat.requests[-1]["body"]["messages"]) == 5
    got = client.responses.retrieve(second.id)
    assert got.id == second.id
    assert got.output_text == second.output_text
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model="default", input="x", previous_response_id="resp_nope")
    assert e.value.body["code"] == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_nope")
    # Without store, nothing is kept: the answer cannot be continued.
    plain = client.responses.create(model="default", input="stateless")
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="default", input="x", previous_response_id=plain.id)


def test_seed_hybrid_answers_through_local_fallback(seed_gateway):
    client = openai.OpenAI(base_url=seed_gateway, api_key="unused-on-loopback", max_retries=0)
    r = client.chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": "bonjour"}])
    assert r.headers["x-clawgate-fallback"] == (
        "answered by lmstudio/minimax-m2.1-gs32 (selected anthropic/claude-sonnet-4-5: unreachable)")
    c = r.parse()
    assert c.choices[0].message.content == "Bonjour du local"
    assert c.choices[0].message.model_extra.get("reasoning_content") == "local reasoning"
    sent = FakeChat.requests[-1]
    assert sent["path"].endswith("/responses")
    assert sent["body"]["model"] == "minimax-m2.1-gs32"


def test_stream_committed_while_the_model_loads(slow_gateway):
    """LOC-2: the model answers "Loading model" for ~2 s; the gateway commits
    the stream after 1 s with keep-alives, then streams the answer."""
    c = openai.OpenAI(base_url=slow_gateway + "/v1", api_key=TOKEN, max_retries=0)
    stream = c.chat.completions.create(
        model="default", stream=True,
        messages=[{"role": "user", "content": "model-loads openai"}])
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert text == "Hello from fake"
    assert FakeChat.loads["model-loads openai"] == 4


def test_stream_that_never_loads_raises_in_the_sdk(slow_gateway):
    """The model never loads (timeout 3 s): the committed stream ends with
    the OpenAI error event, which the SDK raises."""
    c = openai.OpenAI(base_url=slow_gateway + "/v1", api_key=TOKEN, max_retries=0)
    stream = c.chat.completions.create(
        model="default", stream=True,
        messages=[{"role": "user", "content": "model-loads-forever openai"}])
    with pytest.raises(openai.APIError) as e:
        for _ in stream:
            pass
    assert "Loading model" in str(e.value)
