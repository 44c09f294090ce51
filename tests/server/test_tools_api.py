"""Tool calling through the real `openai` client against the real server (the default model,
whose chat template knows no tools: the fallback prompt and the grammar stand in).

Forced calls (required, a named function) validate against their schemas; streamed calls
assemble to the non-streamed ones; a two-turn loop sends the assistant's calls back with
content null and a tool result; bad tool requests are 400s."""

from __future__ import annotations

import json

import jsonschema_rs
import openai
import pytest

WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 40},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a zone",
                                      "parameters": {"type": "object", "properties": {
                                          "zone": {"type": "string", "maxLength": 20}},
                                          "required": ["zone"]}}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]
NAMED = {"type": "function", "function": {"name": "get_time"}}


def _streamed(client: openai.OpenAI, **kwargs) -> tuple[str, list[dict], str | None]:
    content, calls, reason = "", {}, None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            if delta.id:
                assert call["id"] is None, "the id comes once, with the name"
                call["id"] = delta.id
                call["name"] = delta.function.name
            else:
                assert call["id"] is not None, "the arguments come after the id and name"
            call["arguments"] += delta.function.arguments or ""
        reason = choice.finish_reason or reason
    return content, [calls[i] for i in sorted(calls)], reason


@pytest.mark.parametrize("choice", ["required", NAMED])
def test_forced_calls_are_valid_and_stream_the_same(client: openai.OpenAI, model_name: str,
                                                    choice) -> None:
    kwargs = dict(model=model_name, messages=ASK, tools=TOOLS, tool_choice=choice,
                  max_tokens=80, temperature=0)
    response = client.chat.completions.create(**kwargs)
    choice0 = response.choices[0]
    assert choice0.finish_reason == "tool_calls"
    message = choice0.message
    assert message.content is None and message.refusal is None and message.tool_calls
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        if choice is NAMED:
            assert call.function.name == "get_time"
        assert jsonschema_rs.validator_for(SCHEMAS[call.function.name]).is_valid(
            json.loads(call.function.arguments))
    content, calls, reason = _streamed(client, **kwargs)
    assert reason == "tool_calls" and content == ""
    assert [(c["name"], c["arguments"]) for c in calls] == \
        [(c.function.name, c.function.arguments) for c in message.tool_calls]


def test_one_call_without_parallel_calls(client: openai.OpenAI, model_name: str) -> None:
    response = client.chat.completions.create(
        model=model_name, messages=ASK, tools=TOOLS, tool_choice="required",
        parallel_tool_calls=False, max_tokens=80, temperature=0)
    assert len(response.choices[0].message.tool_calls) == 1


def test_auto_stays_free_text_or_valid_calls(client: openai.OpenAI, model_name: str) -> None:
    kwargs = dict(model=model_name, messages=[{"role": "user", "content": "Say hello."}],
                  tools=TOOLS, max_tokens=24, temperature=0)
    message = client.chat.completions.create(**kwargs).choices[0].message
    for call in message.tool_calls or []:
        assert jsonschema_rs.validator_for(SCHEMAS[call.function.name]).is_valid(
            json.loads(call.function.arguments))
    content, calls, _ = _streamed(client, **kwargs)
    assert content == (message.content or "")
    assert [(c["name"], c["arguments"]) for c in calls] == \
        [(c.function.name, c.function.arguments) for c in message.tool_calls or []]


def test_two_turn_loop_with_a_tool_result(client: openai.OpenAI, model_name: str) -> None:
    first = client.chat.completions.create(model=model_name, messages=ASK, tools=TOOLS,
                                           tool_choice=NAMED, parallel_tool_calls=False,
                                           max_tokens=60, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    turn = [*ASK, {"role": "assistant", "content": None,
                   "tool_calls": [call.model_dump(exclude_none=True)]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"time": "12:00"}'}]
    final = client.chat.completions.create(model=model_name, messages=turn, tools=TOOLS,
                                           tool_choice="none", max_tokens=16, temperature=0)
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls
    # The tool result reached the prompt (the fallback renders it as a user turn).
    tokens = client.post("/tokenize", cast_to=object, body={"messages": turn})
    assert tokens["count"] > len(ASK[0]["content"]) // 4 + 10


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
     "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "array"}}}]}, "tools[0].function.parameters"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS + TOOLS[:1]}, "tools"),
    ({"tools": TOOLS, "regex": "[a-z]+"}, "tools"),
    ({"chat_template_kwargs": {"messages": []}}, "chat_template_kwargs"),
])
def test_bad_tool_requests_are_400(client: openai.OpenAI, model_name: str, body: dict,
                                   param: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=model_name, messages=ASK, max_tokens=4,
                                       extra_body=body)
    assert err.value.body["param"] == param, err.value.body


def test_plain_answers_carry_refusal_null(client: openai.OpenAI, model_name: str) -> None:
    response = client.chat.completions.with_raw_response.create(
        model=model_name, messages=ASK, max_tokens=4, temperature=0)
    message = json.loads(response.text)["choices"][0]["message"]
    assert message["refusal"] is None and "tool_calls" not in message

