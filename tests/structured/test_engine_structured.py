"""Constrained decoding through the Engine on the default model (greedy)."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import chat_ids

PHONE = r"\(\d{3}\) \d{3}-\d{4}"
ISO_DATE = r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
YES_NO = 'root ::= answer "."\nanswer ::= "yes" | "no"'
# Long keys: much of the output is forced, which jump-forward appends without sampling.
CITY = json.dumps({"type": "object", "properties": {
    "city_name": {"type": "string", "maxLength": 24},
    "country_name": {"type": "string", "maxLength": 24},
    "population_in_millions": {"type": "integer", "minimum": 0, "maximum": 100},
    "is_capital_city": {"type": "boolean"}},
    "required": ["city_name", "country_name", "population_in_millions", "is_capital_city"]})


def greedy(max_new_tokens: int, **grammar) -> dict:
    return {"temperature": 0.0, "max_new_tokens": max_new_tokens, **grammar}


def city_ids(engine, city: str) -> list[int]:
    return chat_ids(engine, f"Tell me about {city} as JSON.")


def test_json_object(default_engine):
    ids = chat_ids(default_engine, "Describe a cat as JSON.")
    out = default_engine.generate(input_ids=ids, sampling_params=greedy(
        64, json_schema=json.dumps({"type": "object"})))
    assert out["meta_info"]["finish_reason"]["type"] == "stop", out
    assert isinstance(json.loads(out["text"]), dict)


@pytest.mark.parametrize("pattern,question", [
    (PHONE, "What is the phone number of the White House?"),
    (ISO_DATE, "When did the Berlin wall fall?"),
])
def test_regex(default_engine, pattern, question):
    out = default_engine.generate(input_ids=chat_ids(default_engine, question),
                                  sampling_params=greedy(24, regex=pattern))
    assert re.fullmatch(pattern, out["text"]), out["text"]
    assert out["meta_info"]["finish_reason"]["type"] == "stop"


def test_ebnf(default_engine):
    out = default_engine.generate(input_ids=chat_ids(default_engine, "Is the sky blue?"),
                                  sampling_params=greedy(8, ebnf=YES_NO))
    assert out["text"] in ("yes.", "no.")


def test_a_finished_grammar_ends_the_request_even_with_ignore_eos(default_engine):
    out = default_engine.generate(input_ids=chat_ids(default_engine, "Is water wet?"),
                                  sampling_params=greedy(16, ebnf=YES_NO, ignore_eos=True))
    assert out["text"] in ("yes.", "no.")
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": None}


def test_bad_grammar_is_refused_before_queueing(default_engine):
    with pytest.raises(ValueError, match="invalid regex"):
        default_engine.generate("hi", {"regex": "(unclosed"})
    with pytest.raises(ValueError, match="one grammar"):
        default_engine.generate("hi", {"regex": "a", "ebnf": 'root ::= "a"'})


def test_jump_forward_same_output_fewer_steps(default_engine):
    ids = [city_ids(default_engine, city) for city in ("Paris", "Osaka")]
    runs = {}
    for jf in (True, False):
        params = greedy(64, json_schema=CITY, jump_forward=jf)
        runs[jf] = default_engine.generate(input_ids=ids, sampling_params=params)
    for on, off in zip(runs[True], runs[False]):
        assert on["output_ids"] == off["output_ids"]
        assert set(json.loads(on["text"])) == {"city_name", "country_name",
                                               "population_in_millions", "is_capital_city"}
        steps_on, steps_off = on["meta_info"]["model_steps"], off["meta_info"]["model_steps"]
        assert steps_on <= 0.6 * steps_off, (steps_on, steps_off)


def test_grammar_and_plain_requests_do_not_affect_each_other(default_engine):
    plain, constrained = chat_ids(default_engine, "Name three colors."), city_ids(
        default_engine, "Lima")
    p_plain, p_json = greedy(24), greedy(64, json_schema=CITY)
    alone = [default_engine.generate(input_ids=plain, sampling_params=p_plain),
             default_engine.generate(input_ids=constrained, sampling_params=p_json)]
    together = default_engine.generate(input_ids=[plain, constrained],
                                       sampling_params=[p_plain, p_json])
    assert [o["output_ids"] for o in together] == [o["output_ids"] for o in alone]
    json.loads(together[1]["text"])


def test_grammar_backend_none_refuses_grammars_and_serves_the_rest(tiny_model_dir):
    """Refused: grammars, and tool calls that must be valid (required, a named function: a
    400 that says so); served: the rest, tools under `auto` too (parsed, not constrained)."""
    from fastapi.testclient import TestClient

    import jaxengine as je
    from server import create_app

    with je.Engine(model_path=tiny_model_dir, grammar_backend="none",
                   skip_server_warmup=True) as llm:
        with pytest.raises(ValueError, match="grammar-backend none"):
            llm.generate(input_ids=[5, 6, 7], sampling_params=greedy(4, regex=PHONE))
        out = llm.generate(input_ids=[5, 6, 7], sampling_params=greedy(4))
        tools = [{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"x": {"type": "integer"}}}}}]
        body = {"messages": [{"role": "user", "content": "Hi"}], "tools": tools,
                "max_tokens": 4}
        with TestClient(create_app(llm)) as http:
            for choice in ("required", {"type": "function", "function": {"name": "f"}}):
                refused = http.post("/v1/chat/completions", json={**body, "tool_choice": choice})
                assert refused.status_code == 400 and "grammar backend" in refused.text
                assert refused.json()["param"] == "tool_choice"
            served = http.post("/v1/chat/completions", json={**body, "tool_choice": "auto"})
            assert served.status_code == 200, served.text
    assert len(out["output_ids"]) == 4
