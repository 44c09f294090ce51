"""From an OpenAI request to engine inputs: token ids, sampling params, and the checks that
turn a request the engine cannot serve into a clear 400 before it reaches the engine."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import APIError
from .generation import check_batch_size, check_sampling
from .protocol import ChatCompletionRequest, CompletionRequest, SamplingFields
from .reasoning import reasoning_start
from .tools.grammar import after_reasoning
from .tools.request import ToolPlan, plan_tools, template_messages


def sampling_params(req: SamplingFields, max_new_tokens: int, vocab_size: int,
                    grammar: dict[str, str] | None = None) -> dict[str, Any]:
    """The SGLang sampling dict for one choice (n is handled by the server, seed per choice);
    `grammar` replaces the request's own (a chat's tool or reasoning grammar)."""
    params: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "min_new_tokens": req.min_tokens,
        "top_k": req.top_k,
        "min_p": req.min_p,
        "frequency_penalty": req.frequency_penalty,
        "presence_penalty": req.presence_penalty,
        "repetition_penalty": req.repetition_penalty,
        "stop": req.stop,
        "stop_token_ids": req.stop_token_ids,
        "ignore_eos": req.ignore_eos,
        "skip_special_tokens": req.skip_special_tokens,
        "spaces_between_special_tokens": req.spaces_between_special_tokens,
        "no_stop_trim": req.no_stop_trim,
        "seed": req.seed,
    }
    if req.temperature is not None:
        params["temperature"] = req.temperature
    if req.top_p is not None:
        params["top_p"] = req.top_p
    if req.logit_bias:
        params["logit_bias"] = req.logit_bias
    top = logprobs_wanted(req)
    if top is not None:
        params.update(return_logprob=True, top_logprobs_num=top)
    params.update(grammar_params(req) if grammar is None else grammar)
    return check_sampling(params, vocab_size)


def logprobs_wanted(req: SamplingFields) -> int | None:
    """How many top alternatives each token reports, or None for no logprobs at all."""
    if isinstance(req, ChatCompletionRequest):
        return (req.top_logprobs or 0) if req.logprobs else None
    if isinstance(req, CompletionRequest):
        return req.logprobs
    return None


def grammar_params(req: SamplingFields) -> dict[str, str]:
    """response_format, regex or ebnf as the engine's json_schema / regex / ebnf. Whether the
    grammar compiles is the engine's check (a ValueError, so a 400 with the reason)."""
    out: dict[str, str] = {}
    fmt = req.response_format or {}
    kind = fmt.get("type", "text")
    if kind == "json_object":
        out["json_schema"] = json.dumps({"type": "object"})
    elif kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            raise APIError("response_format.json_schema must be an object with a 'schema'",
                           param="response_format")
        schema = spec.get("schema", {"type": "object"})
        if not isinstance(schema, dict):
            raise APIError("response_format.json_schema.schema must be a JSON object",
                           param="response_format")
        out["json_schema"] = json.dumps(schema)
    elif kind != "text":
        raise APIError(f"response_format type must be 'text', 'json_object' or 'json_schema' "
                       f"(got {kind!r})", param="response_format")
    for name in ("regex", "ebnf"):
        value = getattr(req, name)
        if value is not None:
            out[name] = value
    if len(out) > 1:
        raise APIError("give one of response_format, regex and ebnf",
                       param="ebnf" if "ebnf" in out else "regex")
    return out


def check_logit_bias(bias: dict[str, float] | None, vocab_size: int) -> None:
    """OpenAI's rules: keys are token ids (as strings) in the vocabulary, values in
    [-100, 100]."""
    for key, value in (bias or {}).items():
        try:
            token = int(key)
        except ValueError:
            token = -1
        if not 0 <= token < vocab_size:
            raise APIError(f"logit_bias key {key!r} is not a token id in [0, {vocab_size})",
                           param="logit_bias")
        if not -100.0 <= value <= 100.0:
            raise APIError(f"logit_bias value {value} for token {key} is outside [-100, 100]",
                           param="logit_bias")


def reject_unsupported(req: SamplingFields, vocab_size: int) -> None:
    """Fields that would change the answer and that this server cannot honour yet."""
    check_logit_bias(req.logit_bias, vocab_size)
    if isinstance(req, ChatCompletionRequest):
        if req.top_logprobs is not None and not req.logprobs:
            raise APIError("top_logprobs needs logprobs set to true", param="top_logprobs")
    if isinstance(req, CompletionRequest):
        if req.suffix:
            raise APIError("suffix is not supported", param="suffix")
        if req.best_of is not None and req.best_of != req.n:
            raise APIError("best_of must equal n (or be left out)", param="best_of")
    if not req.stream and req.stream_options is not None:
        raise APIError("stream_options is only allowed when stream is true",
                       param="stream_options")


@dataclass
class ChatPrompt:
    ids: list[int]
    plan: ToolPlan | None          # the tools the answer may call
    reasoning_start: str | None    # with --reasoning-parser: how the answer starts
    grammar: dict[str, str] | None  # replaces the request's grammar (tools, reasoning)


def chat_prompt(engine: Any, req: ChatCompletionRequest, added: dict[str, int]
                ) -> ChatPrompt:
    """The rendered prompt, and how the answer will be constrained and split."""
    flags = engine.config.server
    template = engine.chat_template
    plan = plan_tools(req.tools, req.tool_choice, req.parallel_tool_calls,
                      flags.tool_call_parser, template)
    messages, tools = template_messages(req.messages, plan, template)
    kwargs = dict(req.chat_template_kwargs or {})
    for reserved in ("messages", "tools", "add_generation_prompt", "chat_template"):
        if reserved in kwargs:
            raise APIError(f"chat_template_kwargs may not set {reserved!r}",
                           param="chat_template_kwargs")
    try:
        ids = list(engine.apply_chat_template(messages, add_generation_prompt=True,
                                              tools=tools, **kwargs))
    except ValueError as e:
        raise APIError(f"Cannot apply the chat template: {e}", param="messages") from e
    start = None
    if flags.reasoning_parser and req.separate_reasoning:
        start = reasoning_start(flags.reasoning_parser, engine.tokenizer.decode(ids[-16:]))
    return ChatPrompt(ids, plan, start, _chat_grammar(engine, req, plan, start, added))


def _chat_grammar(engine: Any, req: ChatCompletionRequest, plan: ToolPlan | None,
                  start: str | None, added: dict[str, int]) -> dict[str, str] | None:
    """The grammar tools need (every call valid), with a free reasoning part first."""
    if plan is None:
        if start is None or not req.response_format:
            return None
        own = grammar_params(req)  # structured output after the reasoning part
        schema = own.get("json_schema")
        return {"ebnf": after_reasoning(json.loads(schema), start, added)} if schema else own
    if engine.config.structured.grammar_backend == "none":
        if plan.choice != "auto":
            raise APIError("tool_choice 'required' or a named function needs a grammar "
                           "backend (this server runs with --grammar-backend none)",
                           param="tool_choice")
        return None
    if req.regex is not None or req.ebnf is not None:
        raise APIError("regex and ebnf cannot be combined with tools", param="tools")
    own = grammar_params(req)
    answer = json.loads(own["json_schema"]) if "json_schema" in own else None
    try:
        return {"ebnf": plan.grammar(added, answer, start)}
    except ValueError as e:
        raise APIError(str(e), param="tools") from e


def completion_prompts(engine: Any, req: CompletionRequest,
                       vocab_size: int) -> list[tuple[list[int], str]]:
    """Each prompt as (token ids, text); the text is what `echo` prepends."""
    prompt = req.prompt
    if isinstance(prompt, str):
        batch: list[str | list[int]] = [prompt]
    elif prompt and all(isinstance(t, int) for t in prompt):
        batch = [prompt]  # one prompt given as token ids
    else:
        batch = list(prompt)
    if not batch:
        raise APIError("prompt must not be empty", param="prompt")
    check_batch_size(len(batch) * req.n, "prompt")
    out = []
    for k, item in enumerate(batch):
        param = "prompt" if len(batch) == 1 else f"prompt[{k}]"
        if isinstance(item, str):
            ids = engine.encode_prompt(item)
            text = item
        else:
            ids = list(item)
            check_token_ids(ids, vocab_size, param)
            text = engine.tokenizer.decode(ids)
        if not ids:
            raise APIError("prompt must not be empty", param=param)
        out.append((ids, text))
    return out


def check_token_ids(ids: list[int], vocab_size: int, param: str) -> None:
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise APIError(f"token id {bad[0]} is out of range: the vocabulary has {vocab_size} "
                       "tokens", param=param)


def max_new_tokens(n_prompt: int, max_tokens: int | None, context_length: int,
                   param: str) -> int:
    """Tokens left for the completion; a 400 when the prompt (plus max_tokens) does not fit."""
    if n_prompt >= context_length:
        raise APIError(f"This model's maximum context length is {context_length} tokens, "
                       f"but the prompt has {n_prompt} tokens. Please shorten the prompt.",
                       param=param)
    if max_tokens is None:
        return context_length - n_prompt
    if n_prompt + max_tokens > context_length:
        raise APIError(f"This model's maximum context length is {context_length} tokens. "
                       f"However, you requested {n_prompt + max_tokens} tokens ({n_prompt} in "
                       f"the prompt, {max_tokens} for the completion). Please reduce the prompt "
                       "or max_tokens.", param="max_tokens")
    return max_tokens


def truncated(ids: list[int], max_tokens: int | None, context_length: int) -> list[int]:
    """--allow-auto-truncate: a prompt that leaves no room for max_tokens keeps its last
    tokens (the question and the generation prompt are at the end), so that max_tokens fit;
    without max_tokens, a quarter of the context is kept for the answer. At least one prompt
    token stays."""
    room = max_tokens if max_tokens is not None else context_length // 4
    keep = max(context_length - room, 1)
    return ids if len(ids) + room <= context_length else ids[-keep:]


def fit_prompt(ids: list[int], max_tokens: int | None, context_length: int, truncate: bool,
               param: str) -> tuple[list[int], int]:
    """(prompt ids, max new tokens). With --allow-auto-truncate a prompt that does not fit
    is cut (see `truncated`) and max_tokens shrinks only when even one prompt token leaves
    too little room; otherwise it is a 400."""
    if not truncate:
        return ids, max_new_tokens(len(ids), max_tokens, context_length, param)
    ids = truncated(ids, max_tokens, context_length)
    left = context_length - len(ids)
    return ids, left if max_tokens is None else min(max_tokens, left)
