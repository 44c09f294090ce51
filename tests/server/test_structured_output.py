"""Structured output through the real server: OpenAI's response_format with the real openai
client, SGLang's regex / ebnf extensions, and a 400 with the reason for a bad grammar."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from benchmarks.bench_structured import JobCandidate
from tests.server.test_errors import assert_error
from tests.structured.conftest import JOB_PROMPTS, JOB_SCHEMA, job_messages

GREEDY = {"temperature": 0.0}


def test_job_candidate_schema_with_the_openai_client(client: openai.OpenAI, model_name: str):
    """The reference example: a pydantic schema as response_format, ten prompts at once."""
    fmt = {"type": "json_schema",
           "json_schema": {"name": "job_candidate", "schema": JOB_SCHEMA, "strict": True}}

    def ask(prompt: str) -> JobCandidate:
        r = client.chat.completions.create(model=model_name, messages=job_messages(prompt),
                                           response_format=fmt, max_tokens=160, **GREEDY)
        assert r.choices[0].finish_reason == "stop", r
        return JobCandidate.model_validate_json(r.choices[0].message.content)

    with ThreadPoolExecutor(len(JOB_PROMPTS)) as pool:
        answers = list(pool.map(ask, JOB_PROMPTS))
    assert len(answers) == len(JOB_PROMPTS)


def test_parse_with_a_pydantic_class(client: openai.OpenAI, model_name: str):
    r = client.chat.completions.parse(model=model_name, messages=job_messages(JOB_PROMPTS[0]),
                                      response_format=JobCandidate, max_tokens=160, **GREEDY)
    assert isinstance(r.choices[0].message.parsed, JobCandidate)


def test_json_object_whole_and_streamed(client: openai.OpenAI, model_name: str):
    kw = dict(model=model_name, messages=[{"role": "user", "content": "Describe a cat as JSON."}],
              response_format={"type": "json_object"}, max_tokens=64, **GREEDY)
    text = client.chat.completions.create(**kw).choices[0].message.content
    assert isinstance(json.loads(text), dict)
    chunks = client.chat.completions.create(stream=True, **kw)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text


def test_regex_on_completions_and_ebnf_on_generate(client: openai.OpenAI, model_name: str,
                                                   http: httpx.Client):
    date = r"(19|20)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r = client.completions.create(model=model_name, prompt="The Berlin wall fell on",
                                  max_tokens=16, extra_body={"regex": date}, **GREEDY)
    assert re.fullmatch(date, r.choices[0].text), r.choices[0].text
    body = {"text": "Is the sky blue? Answer:", "sampling_params": {
        "max_new_tokens": 8, "temperature": 0.0, "ebnf": 'root ::= " yes" | " no"'}}
    response = http.post("/generate", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["text"] in (" yes", " no")


@pytest.mark.parametrize(("extra", "param", "reason"), [
    ({"response_format": {"type": "json_schema",
                          "json_schema": {"name": "x", "schema": {"type": "nope"}}}},
     None, "nope"),
    ({"response_format": {"type": "xml"}}, "response_format", "xml"),
    ({"response_format": {"type": "json_schema"}}, "response_format", "json_schema"),
    ({"regex": "(unclosed"}, None, "unclosed"),
    ({"ebnf": "root ::= ("}, None, "ebnf"),
    ({"regex": "a", "response_format": {"type": "json_object"}}, "regex", "one of"),
])
def test_bad_grammar_is_a_400_with_the_reason(http: httpx.Client, extra: dict,
                                              param: str | None, reason: str):
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **extra}
    error = assert_error(http.post("/v1/chat/completions", json=body), param=param)
    assert reason in error["message"]
