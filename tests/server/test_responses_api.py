"""The Responses API (/v1/responses) through the real `openai` client: text, the streamed
event sequence assembling to the same response, function calls and their outputs across turns
with previous_response_id, retrieval, and clear errors."""

from __future__ import annotations

import json

import jsonschema_rs
import openai
import pytest

CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
        "required": ["city"]}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Current weather",
          "parameters": CITY}]


def test_text_response_and_its_stream(client: openai.OpenAI, model_name: str) -> None:
    kwargs = dict(model=model_name, input="Name a color.", instructions="Answer briefly.",
                  max_output_tokens=10, temperature=0)
    response = client.responses.create(**kwargs)
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status in ("completed", "incomplete") and response.output_text
    assert response.usage.output_tokens <= 10 and response.usage.input_tokens > 0
    with client.responses.stream(**kwargs) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert kinds[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done",
                            "response.output_item.done"]
    assert final.output_text == response.output_text


def test_function_call_turns(client: openai.OpenAI, model_name: str) -> None:
    first = client.responses.create(model=model_name, input="What is the weather in Oslo?",
                                    tools=TOOLS, tool_choice="required",
                                    parallel_tool_calls=False, max_output_tokens=40,
                                    temperature=0)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert jsonschema_rs.validator_for(CITY).is_valid(json.loads(calls[0].arguments))
    with client.responses.stream(model=model_name, input="What is the weather in Oslo?",
                                 tools=TOOLS, tool_choice="required",
                                 parallel_tool_calls=False, max_output_tokens=40,
                                 temperature=0) as stream:
        streamed = [item for item in stream.get_final_response().output
                    if item.type == "function_call"]
    assert [(c.name, c.arguments) for c in streamed] == [(c.name, c.arguments) for c in calls]
    second = client.responses.create(
        model=model_name, previous_response_id=first.id, tools=TOOLS, tool_choice="none",
        input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                "output": '{"temperature": 3}'}], max_output_tokens=12, temperature=0)
    assert second.previous_response_id == first.id and second.output_text
    # The same conversation sent in full, without the stored response, gives the same answer.
    full = client.responses.create(
        model=model_name, tools=TOOLS, tool_choice="none", max_output_tokens=12, temperature=0,
        input=[{"role": "user", "content": "What is the weather in Oslo?"},
               {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather",
                "arguments": calls[0].arguments},
               {"type": "function_call_output", "call_id": calls[0].call_id,
                "output": '{"temperature": 3}'}])
    assert full.output_text == second.output_text
    assert client.responses.retrieve(second.id).output_text == second.output_text


def test_errors(client: openai.OpenAI, model_name: str) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=model_name, input="hi", previous_response_id="resp_nope")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_nope")
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=model_name, input=[{"type": "image_generation_call"}])
    assert err.value.body["param"] == "input[0]"
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=model_name, input="hi",
                                tools=[{"type": "web_search_preview"}])
    assert err.value.body["param"] == "tools[0]"
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=model_name, input="hi",
                                tools=[{"type": "function", "name": "no spaces"}])
    assert err.value.body["param"] == "tools[0].name"
