"""Every OpenAI and SGLang request parameter the server takes, through the real `openai`
client or httpx, with assertions on what comes back; plus /v1/tokenize, /v1/detokenize,
/abort_request and the live counters of /get_server_info. Generations stay a few tokens long."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

GREEDY = {"temperature": 0.0}
PROMPT = "Once upon a time"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def complete(http: httpx.Client, **body) -> dict:
    response = http.post("/v1/completions", json={"prompt": PROMPT, **GREEDY, **body})
    assert response.status_code == 200, response.text
    return response.json()


def tokens_of(http: httpx.Client, text: str) -> list[int]:
    return http.post("/v1/tokenize", json={"prompt": text,
                                           "add_special_tokens": False}).json()["tokens"]


# -- finish_reason, matched_stop, stop_token_ids, ignore_eos, min_tokens --------------------

def test_stop_token_ids_report_the_matched_id(http: httpx.Client) -> None:
    base = complete(http, max_tokens=8, ignore_eos=True)
    ids = tokens_of(http, base["choices"][0]["text"])
    stop_id = ids[2]
    out = complete(http, max_tokens=8, ignore_eos=True, stop_token_ids=[stop_id])["choices"][0]
    assert out["finish_reason"] == "stop" and out["matched_stop"] == stop_id
    assert out["text"] and base["choices"][0]["text"].startswith(out["text"])


def test_ignore_eos_and_min_tokens_force_the_length(client: openai.OpenAI,
                                                     model_name: str) -> None:
    out = client.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": "Say hi."}], max_tokens=12,
        temperature=0, extra_body={"ignore_eos": True})
    assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 12
    short = client.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": "Say hi."}], max_tokens=64,
        temperature=0)
    n = short.usage.completion_tokens
    assert n < 60 and short.choices[0].finish_reason == "stop"
    # min_tokens keeps EOS away for a few more tokens than the answer needs.
    longer = client.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": "Say hi."}], max_tokens=64,
        temperature=0, extra_body={"min_tokens": n + 3})
    assert longer.usage.completion_tokens >= n + 3


def test_max_completion_tokens_wins_over_max_tokens(client: openai.OpenAI,
                                                    model_name: str) -> None:
    out = client.chat.completions.create(model=model_name, messages=QUESTION, temperature=0,
                                         max_tokens=20, max_completion_tokens=3,
                                         extra_body={"ignore_eos": True})
    assert out.usage.completion_tokens == 3 and out.choices[0].finish_reason == "length"


def test_n_choices_with_a_seed_are_reproducible_and_differ(client: openai.OpenAI,
                                                           model_name: str) -> None:
    def texts() -> list[str]:
        out = client.completions.create(model=model_name, prompt=PROMPT, max_tokens=8, n=3,
                                        temperature=1.0, seed=11, user="user-1234")
        assert sorted(c.index for c in out.choices) == [0, 1, 2]
        return [c.text for c in sorted(out.choices, key=lambda c: c.index)]

    first = texts()
    assert texts() == first
    assert len(set(first)) > 1  # seed + i per choice


# -- sampling knobs --------------------------------------------------------------------------

def test_top_k_1_and_min_p_1_are_greedy(http: httpx.Client) -> None:
    greedy = complete(http, max_tokens=8, ignore_eos=True)["choices"][0]["text"]
    for knob in ({"top_k": 1}, {"min_p": 1.0}):
        hot = complete(http, max_tokens=8, ignore_eos=True, temperature=1.5, seed=3, **knob)
        assert hot["choices"][0]["text"] == greedy, knob


def test_penalties_change_a_repetitive_greedy_text(http: httpx.Client) -> None:
    prompt = "a, a, a, a, a, a, a, a,"
    plain = complete(http, prompt=prompt, max_tokens=10, ignore_eos=True)["choices"][0]["text"]
    assert plain.count("a,") >= 4, plain  # greedy, the model keeps repeating
    for knob in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0},
                 {"repetition_penalty": 2.0}):
        text = complete(http, prompt=prompt, max_tokens=10, ignore_eos=True,
                        **knob)["choices"][0]["text"]
        assert text.count("a,") < plain.count("a,"), (knob, text)


def test_skip_special_tokens(http: httpx.Client) -> None:
    """The answer ends with the EOS token <|im_end|>: shown only with skip_special_tokens
    false, and reported as the matched stop id."""
    eos = tokens_of(http, "<|im_end|>")
    assert len(eos) == 1
    body = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 64, **GREEDY}
    texts = {}
    for flag in (True, False):
        out = http.post("/v1/chat/completions", json={**body, "skip_special_tokens": flag})
        choice = out.json()["choices"][0]
        assert choice["finish_reason"] == "stop" and choice["matched_stop"] == eos[0]
        texts[flag] = choice["message"]["content"]
    assert texts[False] == texts[True] + "<|im_end|>"
    assert http.post("/v1/detokenize", json={"tokens": eos, "skip_special_tokens": True}
                     ).json()["text"] == ""


def test_stream_options_include_usage_only_when_asked(client: openai.OpenAI,
                                                      model_name: str) -> None:
    plain = list(client.completions.create(model=model_name, prompt=PROMPT, max_tokens=3,
                                           temperature=0, stream=True))
    assert all(c.usage is None for c in plain)
    counted = list(client.completions.create(model=model_name, prompt=PROMPT, max_tokens=3,
                                             temperature=0, stream=True,
                                             stream_options={"include_usage": True}))
    assert counted[-1].choices == [] and counted[-1].usage.completion_tokens == 3


def test_echo_with_a_stream(client: openai.OpenAI, model_name: str) -> None:
    chunks = list(client.completions.create(model=model_name, prompt=PROMPT, max_tokens=3,
                                            temperature=0, echo=True, stream=True))
    assert chunks[0].choices[0].text == PROMPT
    assert "".join(c.choices[0].text for c in chunks).startswith(PROMPT)


# -- logit_bias: validated (tests/server/test_logprobs.py checks what it does) ---------------

@pytest.mark.parametrize("bias", [{"abc": 1}, {"-1": 1}, {"99999999": 1}, {"5": 101}])
def test_bad_logit_bias_is_a_400(http: httpx.Client, bias: dict) -> None:
    response = http.post("/v1/completions", json={"prompt": PROMPT, "logit_bias": bias})
    assert response.status_code == 400 and response.json()["param"] == "logit_bias"
    assert "logit_bias" in response.json()["message"]


# -- /v1/tokenize, /v1/detokenize ------------------------------------------------------------

def test_tokenize_round_trip(http: httpx.Client, model_info: dict) -> None:
    out = http.post("/v1/tokenize", json={"prompt": "Hello world"}).json()
    assert out["count"] == len(out["tokens"]) > 0
    assert out["max_model_len"] == model_info["context_length"]
    assert http.post("/v1/detokenize", json={"tokens": out["tokens"]}).json() == \
        {"text": "Hello world"}
    batch = http.post("/v1/tokenize", json={"prompt": ["a b", "c"]}).json()
    assert batch["count"] == [len(t) for t in batch["tokens"]]
    texts = http.post("/v1/detokenize", json={"tokens": batch["tokens"]}).json()["text"]
    assert texts == ["a b", "c"]


def test_tokenize_messages_counts_the_chat_prompt(client: openai.OpenAI, http: httpx.Client,
                                                  model_name: str) -> None:
    count = http.post("/v1/tokenize", json={"messages": QUESTION}).json()["count"]
    out = client.chat.completions.create(model=model_name, messages=QUESTION, max_tokens=1)
    assert count == out.usage.prompt_tokens


def test_tokenize_errors(http: httpx.Client) -> None:
    assert http.post("/v1/tokenize", json={}).status_code == 400
    bad = http.post("/v1/detokenize", json={"tokens": [10**9]})
    assert bad.status_code == 400 and bad.json()["param"] == "tokens"
    assert http.post("/v1/detokenize", json={"tokens": "abc"}).status_code == 400


# -- /abort_request and live counters --------------------------------------------------------

def test_abort_request_ends_a_running_generation(server, http: httpx.Client) -> None:
    body = {"text": PROMPT, "rid": "abort-me", "stream": True,
            "sampling_params": {"max_new_tokens": 1000, "ignore_eos": True, "temperature": 0}}
    events: list[str] = []

    def run() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as other, \
                other.stream("POST", "/generate", json=body) as response:
            events.extend(line for line in response.iter_lines() if line.startswith("data:"))

    reader = threading.Thread(target=run)
    reader.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        aborted = http.post("/abort_request", json={"rid": "abort-me"}).json()["aborted"]
        if aborted:
            break
        time.sleep(0.2)
    assert aborted == ["abort-me"]
    reader.join(60)
    assert events[-1] == "data: [DONE]"
    assert "aborted by /abort_request" in events[-2]
    assert len(events) < 900  # it stopped long before max_new_tokens
    assert http.post("/abort_request", json={}).status_code == 400


def test_server_info_counts_requests_and_pages(http: httpx.Client) -> None:
    before = http.get("/get_server_info").json()
    complete(http, max_tokens=5, ignore_eos=True)
    after = http.get("/get_server_info").json()
    assert after["generation_tokens_total"] >= before["generation_tokens_total"] + 5
    assert after["num_requests_total"] >= before["num_requests_total"] + 1
    assert after["max_total_num_tokens"] > 0 and 0.0 <= after["token_usage"] <= 1.0
    assert after["kv_cache_integrity"] == "ok"
    assert after["api_key"] is None
