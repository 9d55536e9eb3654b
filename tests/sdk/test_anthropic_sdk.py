"""The official Anthropic Python SDK against `clawgate gateway`: an
Anthropic client running on a local OpenAI-compatible model (GW-1)."""

import anthropic
import pytest

from conftest import TOKEN, FakeChat

TOOLS = [{"name": "get_weather", "description": "weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


@pytest.fixture
def client(gateway):
    return anthropic.Anthropic(base_url=gateway.removesuffix("/v1"), api_key=TOKEN, max_retries=0)


def test_messages_non_stream_with_thinking(client):
    m = client.messages.create(model="default", max_tokens=64, system="be brief",
                               messages=[{"role": "user", "content": "hi"}])
    kinds = [b.type for b in m.content]
    assert kinds == ["thinking", "text"]
    assert m.content[0].thinking == "let me think"
    assert m.content[1].text == "Hello from fake"
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens == 11 and m.usage.output_tokens == 4
    sent = FakeChat.requests[-1]["body"]
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent["max_tokens"] == 64


def test_messages_stream_event_sequence(client):
    events = []
    text = ""
    with client.messages.stream(model="Tiny", max_tokens=64,
                                messages=[{"role": "user", "content": "hi"}]) as s:
        for ev in s:
            events.append(ev.type)
            if ev.type == "content_block_delta" and ev.delta.type == "text_delta":
                text += ev.delta.text
        final = s.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_start" in events and "message_delta" in events
    assert text == "Hello from fake"
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.usage.output_tokens == 4


def test_tool_use_round_trip_with_beta_client(client):
    # The beta client sends ?beta=true and anthropic-beta headers, as coding agents do.
    first = client.beta.messages.create(model="default", max_tokens=64, tools=TOOLS,
                                        messages=[{"role": "user", "content": "weather in Paris?"}],
                                        betas=["interleaved-thinking-2025-05-14"])
    assert first.stop_reason == "tool_use"
    use = [b for b in first.content if b.type == "tool_use"][0]
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    second = client.messages.create(model="default", max_tokens=64, tools=TOOLS, messages=[
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
    ])
    assert [b.text for b in second.content if b.type == "text"] == ["Sunny in Paris"]
    sent = FakeChat.requests[-1]["body"]["messages"]
    assert sent[-1] == {"role": "tool", "content": "sunny", "tool_call_id": use.id}


def test_errors_in_anthropic_shape(gateway):
    bad = anthropic.Anthropic(base_url=gateway.removesuffix("/v1"), api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model="default", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "authentication_error"
    good = anthropic.Anthropic(base_url=gateway.removesuffix("/v1"), api_key=TOKEN, max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as e:
        good.messages.create(model="nope", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "not_found_error"
    assert "The model `nope` does not exist" in e.value.body["error"]["message"]


def test_messages_stream_tool_use(client):
    with client.messages.stream(model="default", max_tokens=64, tools=TOOLS,
                                messages=[{"role": "user", "content": "weather?"}]) as s:
        final = s.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use"
    assert uses and uses[0].name == "get_weather" and uses[0].input == {"city": "Paris"}


def test_stream_committed_while_the_model_loads(slow_gateway):
    """LOC-2: `event: ping` while the model loads, then the answer."""
    c = anthropic.Anthropic(base_url=slow_gateway, api_key=TOKEN, max_retries=0)
    with c.messages.stream(model="default", max_tokens=64,
                           messages=[{"role": "user", "content": "model-loads anthropic"}]) as s:
        text = "".join(s.text_stream)
    assert text == "Hello from fake"
    assert FakeChat.loads["model-loads anthropic"] == 4


def test_stream_that_never_loads_raises_in_the_sdk(slow_gateway):
    c = anthropic.Anthropic(base_url=slow_gateway, api_key=TOKEN, max_retries=0)
    with pytest.raises(anthropic.APIError) as e:
        with c.messages.stream(model="default", max_tokens=64,
                               messages=[{"role": "user", "content": "model-loads-forever anthropic"}]) as s:
            for _ in s:
                pass
    assert "Loading model" in str(e.value)
