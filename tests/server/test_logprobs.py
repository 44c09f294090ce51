"""logprobs / top_logprobs and logit_bias through the real server and the openai client."""

from __future__ import annotations

import math

import httpx
import openai

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
PROMPT = "The three primary colours are"


def _check_entries(entries, k: int) -> None:
    for e in entries:
        assert e.logprob <= 0 and len(e.top_logprobs) == k
        assert bytes(e.bytes) == e.token.encode()  # this answer is ASCII
        tops = [t.logprob for t in e.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        assert e.logprob == max(tops)  # greedy picks the most likely token
        assert sum(math.exp(t) for t in tops) <= 1 + 1e-5


def test_chat_logprobs_stream_and_not(client: openai.OpenAI, model_name: str) -> None:
    kw = dict(model=model_name, messages=QUESTION, max_tokens=8, temperature=0, logprobs=True,
              top_logprobs=3)
    response = client.chat.completions.create(**kw)
    full = response.choices[0]
    entries = full.logprobs.content
    # A final EOS is not reported: its text is not part of the answer.
    assert len(entries) == response.usage.completion_tokens - (full.finish_reason == "stop")
    assert "".join(e.token for e in entries) == full.message.content
    _check_entries(entries, 3)
    streamed = [c.choices[0] for c in client.chat.completions.create(**kw, stream=True)
                if c.choices and c.choices[0].logprobs]
    got = [e for c in streamed for e in c.logprobs.content]
    assert [e.token for e in got] == [e.token for e in entries]
    assert all(abs(a.logprob - b.logprob) < 1e-4 for a, b in zip(got, entries))
    plain = client.chat.completions.create(**{**kw, "logprobs": None, "top_logprobs": None})
    assert plain.choices[0].logprobs is None


def test_chat_stops_on_eos_without_reporting_it(client: openai.OpenAI, model_name: str) -> None:
    choice = client.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": "Say just: yes"}],
        max_tokens=32, temperature=0, logprobs=True).choices[0]
    assert choice.finish_reason == "stop"
    assert "".join(e.token for e in choice.logprobs.content) == choice.message.content
    assert all(e.top_logprobs == [] for e in choice.logprobs.content)


def test_completion_logprobs_stream_and_not(client: openai.OpenAI, model_name: str) -> None:
    kw = dict(model=model_name, prompt=PROMPT, max_tokens=6, temperature=0, logprobs=2)
    choice = client.completions.create(**kw).choices[0]
    lp = choice.logprobs
    assert "".join(lp.tokens) == choice.text and len(lp.tokens) == 6
    assert lp.text_offset == [sum(map(len, lp.tokens[:i])) for i in range(6)]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert logprob <= 0 and len(top) <= 3 and top[token] == logprob
        assert logprob == max(top.values())
    chunks = [c.choices[0] for c in client.completions.create(**kw, stream=True)]
    assert sum((c.logprobs.tokens for c in chunks if c.logprobs), []) == lp.tokens
    assert sum((c.logprobs.text_offset for c in chunks if c.logprobs), []) == lp.text_offset


def test_logit_bias_bans_and_forces(client: openai.OpenAI, model_name: str,
                                    http: httpx.Client) -> None:
    body = {"text": PROMPT, "sampling_params": {"temperature": 0, "max_new_tokens": 6}}
    base = http.post("/generate", json=body).json()
    greedy = base["output_ids"][0]
    banned = {str(greedy): -100}
    again = http.post("/generate", json={**body, "sampling_params": {
        **body["sampling_params"], "logit_bias": banned}}).json()
    assert greedy not in again["output_ids"]
    kw = dict(model=model_name, prompt=PROMPT, max_tokens=6, temperature=0)
    assert client.completions.create(**kw).choices[0].text == base["text"]
    assert client.completions.create(**kw, logit_bias=banned).choices[0].text != base["text"]
    token = http.post("/v1/tokenize", json={"prompt": " blue", "add_special_tokens": False}
                      ).json()["tokens"][0]
    forced = client.chat.completions.create(model=model_name, messages=QUESTION, max_tokens=3,
                                            temperature=1.0, seed=3, logit_bias={token: 100})
    text = http.post("/v1/detokenize", json={"tokens": [token]}).json()["text"]
    assert forced.choices[0].message.content == text * 3


def test_generate_returns_sglang_logprobs(http: httpx.Client) -> None:
    out = http.post("/generate", json={
        "text": PROMPT, "sampling_params": {"temperature": 0, "max_new_tokens": 3},
        "return_logprob": True, "top_logprobs_num": 2, "return_text_in_logprobs": True}).json()
    meta = out["meta_info"]
    assert [t for _, t, _ in meta["output_token_logprobs"]] == out["output_ids"]
    assert "".join(text for _, _, text in meta["output_token_logprobs"]) == out["text"]
    assert all(len(row) == 2 and row[0][0] >= row[1][0] for row in meta["output_top_logprobs"])
    plain = http.post("/generate", json={"text": PROMPT,
                                         "sampling_params": {"max_new_tokens": 1}}).json()
    assert "output_token_logprobs" not in plain["meta_info"]


def _prompt_logprobs(http: httpx.Client, text: str) -> list:
    body = {"text": text, "sampling_params": {"max_new_tokens": 0}, "return_logprob": True,
            "logprob_start_len": 0, "return_text_in_logprobs": True}
    response = http.post("/generate", json=body)
    assert response.status_code == 200, response.text
    return response.json()["meta_info"]["input_token_logprobs"]


def test_completions_echo_with_logprobs_scores_the_prompt(client: openai.OpenAI,
                                                          model_name: str,
                                                          http: httpx.Client) -> None:
    """What evaluation harnesses send: echo + logprobs, max_tokens 0 (score) or 1."""
    want = _prompt_logprobs(http, PROMPT)
    scored = client.completions.create(model=model_name, prompt=PROMPT, echo=True, logprobs=2,
                                       max_tokens=0)
    choice = scored.choices[0]
    lp = choice.logprobs
    assert choice.text == PROMPT and scored.usage.completion_tokens == 0
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert "".join(lp.tokens) == PROMPT == "".join(text for _, _, text in want)
    assert all(abs(a - b[0]) < 1e-5 for a, b in zip(lp.token_logprobs[1:], want[1:]))
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]
    for chosen, top in zip(lp.token_logprobs[1:], lp.top_logprobs[1:]):
        assert chosen <= max(top.values()) + 1e-6 and 2 <= len(top) <= 3
    kw = dict(model=model_name, prompt=PROMPT, echo=True, logprobs=1, max_tokens=3,
              temperature=0)
    full = client.completions.create(**kw).choices[0]
    n = len(want)
    assert full.logprobs.tokens[:n] == lp.tokens and len(full.logprobs.tokens) == n + 3
    assert full.text == PROMPT + "".join(full.logprobs.tokens[n:])
    streamed = [c.choices[0] for c in client.completions.create(**kw, stream=True)
                if c.choices and c.choices[0].logprobs]
    assert [t for c in streamed for t in c.logprobs.tokens] == full.logprobs.tokens
    assert [o for c in streamed for o in c.logprobs.text_offset] == full.logprobs.text_offset


def test_generate_prompt_logprobs_as_sglang_select_reads_them(http: httpx.Client) -> None:
    """sgl.select's request: a batch of texts, max_new_tokens 0, text in the logprobs."""
    prefix = "The capital of France is"
    body = {"text": [prefix + " Paris", prefix + " a banana"],
            "sampling_params": {"max_new_tokens": 0, "temperature": 0},
            "return_logprob": True, "return_text_in_logprobs": True, "logprob_start_len": 3}
    out = http.post("/generate", json=body).json()
    assert isinstance(out, list) and len(out) == 2
    paris, banana = (o["meta_info"]["input_token_logprobs"] for o in out)
    assert [t for _, _, t in paris][-1] == " Paris" and paris[0] == banana[0]
    assert all(o["text"] == "" and o["meta_info"]["completion_tokens"] == 0 for o in out)
    mean = [sum(lp for lp, _, _ in row) / len(row) for row in (paris, banana)]
    assert mean[0] > mean[1]
    # SGLang's default -1: the last prompt token only.
    last = http.post("/generate", json={"text": prefix, "return_logprob": True,
                                        "sampling_params": {"max_new_tokens": 0}}).json()
    assert len(last["meta_info"]["input_token_logprobs"]) == 1


def test_generate_stop_regex(http: httpx.Client) -> None:
    body = {"text": "Count: 1, 2, 3,", "sampling_params": {
        "max_new_tokens": 24, "temperature": 0, "stop_regex": [r"\b6\b"]}}
    plain = http.post("/generate", json={**body, "sampling_params": {
        **body["sampling_params"], "stop_regex": []}}).json()
    out = http.post("/generate", json=body).json()
    assert "6" in plain["text"], plain["text"]  # the model counts on
    assert out["text"] == plain["text"][:plain["text"].find("6")]
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": "6"}


def test_generate_token_ids_logprob(http: httpx.Client) -> None:
    paris = http.post("/v1/tokenize", json={"prompt": " Paris"}).json()["tokens"][0]
    body = {"text": "The capital of France is", "return_logprob": True,
            "return_text_in_logprobs": True, "token_ids_logprob": [paris, 28],
            "logprob_start_len": 4, "sampling_params": {"max_new_tokens": 2, "temperature": 0}}
    meta = http.post("/generate", json=body).json()["meta_info"]
    out_rows, in_rows = meta["output_token_ids_logprobs"], meta["input_token_ids_logprobs"]
    assert len(out_rows) == 2 and len(in_rows) == meta["prompt_tokens"] - 4
    assert [(t, text) for _, t, text in out_rows[0]] == [(paris, " Paris"), (28, ",")]
    first_lp, first = meta["output_token_logprobs"][0][:2]
    assert first == paris  # the greedy answer; its row holds the same logprob
    assert abs(out_rows[0][0][0] - first_lp) < 1e-5
