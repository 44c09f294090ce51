"""SGLang's frontend language, the real PyPI package's `sglang.lang`, against the real server:
gen (stop, regex, dtype), select, fork, run_batch, streaming, flush_cache.

`import sglang` also loads SGLang's own GPU runtime (triton and more); its frontend needs none
of that, so the package's `sglang.lang` modules are imported without the top-level
`sglang/__init__.py` (installed with `pip install --no-deps sglang`, see the Makefile).
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types

import httpx
import pytest


def _frontend():
    spec = importlib.util.find_spec("sglang")
    if spec is None:
        pytest.fail("the sglang package is not installed: run `make install`")
    if "sglang" not in sys.modules:
        package = types.ModuleType("sglang")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["sglang"] = package
    from sglang.lang import api
    from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint

    return api, RuntimeEndpoint


@pytest.fixture(scope="module")
def sgl(server):
    api, RuntimeEndpoint = _frontend()
    template = httpx.get(server.url + "/get_model_info").json()["sglang_chat_template"]
    assert template == "chatml"  # SmolLM2's turns; SGLang's path matching finds none
    backend = RuntimeEndpoint(server.url, chat_template_name=template)
    api.set_default_backend(backend)
    return api


def _greedy_text(http: httpx.Client, text: str, **params) -> str:
    body = {"text": text, "sampling_params": {"temperature": 0, **params}}
    return http.post("/generate", json=body).json()["text"]


def test_gen_with_stop_regex_and_dtype(sgl, http: httpx.Client) -> None:
    @sgl.function
    def facts(s):
        s += sgl.user("Name a colour of the sky, in one word.")
        s += sgl.assistant(sgl.gen("colour", max_tokens=12, stop="\n", temperature=0))
        s += sgl.user("Which year did the Second World War end?")
        s += sgl.assistant(sgl.gen("year", regex=r"[0-9]{4}", temperature=0))
        s += sgl.user("How many legs does a spider have?")
        s += sgl.assistant(sgl.gen("legs", dtype=int, temperature=0))

    state = facts.run()
    assert state.error() is None
    text = state.text()
    prefix = text[:text.index(state["colour"], text.index("one word."))]
    assert state["colour"] == _greedy_text(http, prefix, max_new_tokens=12, stop="\n")
    assert re.fullmatch(r"[0-9]{4}", state["year"])
    assert re.fullmatch(r"-?[0-9]+", state["legs"].strip())


def test_select_agrees_with_the_prompt_logprobs(sgl, http: httpx.Client) -> None:
    choices = ["Paris", "a banana", "the moon"]

    @sgl.function
    def capital(s):
        s += "Q: What is the capital of France?\nA: The capital of France is "
        s += sgl.select("city", choices=choices)

    state = capital.run()
    assert state.error() is None
    prefix = "Q: What is the capital of France?\nA: The capital of France is "
    n_prefix = len(http.post("/v1/tokenize", json={"prompt": prefix}).json()["tokens"])
    means = []
    for choice in choices:
        out = http.post("/generate", json={
            "text": prefix + choice, "sampling_params": {"max_new_tokens": 0},
            "return_logprob": True, "logprob_start_len": n_prefix}).json()
        lps = [lp for lp, _, _ in out["meta_info"]["input_token_logprobs"]]
        means.append(sum(lps) / len(lps))
    assert state["city"] == choices[means.index(max(means))] == "Paris"


def test_fork_shares_the_prefix_through_the_radix_cache(sgl) -> None:
    @sgl.function
    def tips(s):
        s += ("Here are two tips for staying healthy: 1. Balanced diet. 2. Regular exercise. "
              "Both matter, and each can be explained at length. In short: ")
        s += sgl.gen("summary", max_tokens=8, temperature=0) + "\n\n"
        forks = s.fork(2)  # both branches continue from the prefix the server just computed
        for i, f in enumerate(forks):
            f += f"Now, expand tip {i + 1} into one sentence:\n"
            f += sgl.gen("detail", max_tokens=12, temperature=0)
        forks.join()
        s["details"] = [f["detail"] for f in forks]
        s["cached"] = [f.get_meta_info("detail")["cached_tokens"] for f in forks]

    state = tips.run()
    assert all(isinstance(d, str) and d for d in state["details"])
    assert max(state["cached"]) > 0  # the shared prefix came from the cache


def test_run_batch_and_streaming_equal_single_runs(sgl) -> None:
    @sgl.function
    def answer(s, question):
        s += sgl.user(question)
        s += sgl.assistant(sgl.gen("answer", max_tokens=10, temperature=0))

    questions = ["What is 2 + 2?", "Name a fruit.", "What colour is grass?"]
    single = [answer.run(question=q)["answer"] for q in questions]
    batch = answer.run_batch([{"question": q} for q in questions], num_threads=3)
    assert [state["answer"] for state in batch] == single
    streamed = answer.run(question=questions[0], stream=True)
    assert "".join(streamed.text_iter("answer")) == single[0]


def test_flush_cache_and_server_info(sgl) -> None:
    backend = sgl.global_config.default_backend
    backend.flush_cache()
    assert backend.get_server_info()["num_running_reqs"] == 0
