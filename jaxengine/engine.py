"""Engine: the offline and async API, a client of the engine-core process.

This process tokenizes, detokenizes and checks inputs; the core process schedules and runs
the model. `generate` works in scripts and notebooks alike (its event loop runs on a thread
of its own); `async_generate` runs on the caller's loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import random
import re
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from jaxengine.config import EngineConfig
from jaxengine.core.client import CoreClient
from jaxengine.core.messages import AddRequest, TokenOutput
from jaxengine.request import RequestState, RequestStream
from jaxengine.sampling_params import MAX_SUPPRESSED, SamplingParams, suppressed_ids
from jaxengine.structured.sandbox import GrammarSandbox

log = logging.getLogger(__name__)


class Engine:
    """`Engine(**server_flags)`; generate / async_generate; shutdown (or use `with`)."""

    def __init__(self, config: EngineConfig | None = None, **kwargs: Any):
        from jaxengine.models.checkpoint import load_checkpoint

        if config is not None and kwargs:
            raise TypeError("pass either config or keyword options, not both")
        self.config = config or EngineConfig.from_kwargs(**kwargs)
        m = self.config.model
        checkpoint = load_checkpoint(m.model_path, m.tokenizer_path, m.load_format)  # metadata
        self.tokenizer = checkpoint.tokenizer
        self.model_path = checkpoint.path
        self.served_model_name = m.served_model_name or checkpoint.name
        self.chat_template = _read_template(m.chat_template) or checkpoint.chat_template
        self._seeds = random.Random(self.config.server.random_seed)
        # Why a request was aborted by this side (shutdown, an abort endpoint), for its result.
        self._abort_reasons: dict[str, tuple[str, int]] = {}
        # Requests in flight: the engine's own key -> the caller's label (request_id).
        self._labels: dict[str, str] = {}
        self._keys = itertools.count()
        # Called with a timing record (see `RequestState.timings`) when a request finishes.
        self.request_listeners: list[Callable[[dict[str, Any]], None]] = []
        # Called once with the reason if the engine-core process dies (from a reader thread).
        self.death_listeners: list[Callable[[str], None]] = []
        self._mailboxes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._mailboxes_lock = threading.Lock()
        self._client = CoreClient(self.config, on_death=self._core_died)
        self.core_info = self._client.info
        self.context_length: int = self.core_info["context_length"]
        self.vocab_size: int = self.core_info["vocab_size"]
        self.eos_ids: list[int] = self.core_info["eos_token_ids"]
        # A new grammar is compiled in a sandbox first, so that a bad or hostile one is
        # refused (ValueError) before it is queued.
        s = self.config.structured
        self.grammar = None if s.grammar_backend == "none" else GrammarSandbox(
            self.tokenizer, self.vocab_size, self.core_info["eos_token_ids"],
            timeout_s=s.grammar_compile_timeout)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="jaxengine-engine-loop")
        self._thread.start()

    # ---- info ---------------------------------------------------------------------------
    def get_model_info(self) -> dict[str, Any]:
        return {"model_path": self.model_path, "served_model_name": self.served_model_name,
                "tokenizer_path": self.config.model.tokenizer_path or self.model_path,
                "architecture": self.core_info["architecture"],
                "context_length": self.context_length, "vocab_size": self.vocab_size,
                "is_generation": True,
                # SGLang's frontend formats chat roles on the client, with a template it picks
                # by model path; this is the one matching ours, for RuntimeEndpoint's
                # chat_template_name (None: no SGLang template matches).
                "sglang_chat_template": sglang_chat_template(self.chat_template)}

    def get_server_info(self) -> dict[str, Any]:
        """The flat config, start-up facts and live counters (queue, cache hit rate, ...)."""
        return {**self.config.flat(), **self.core_info, **self._client.call("stats")}

    @property
    def alive(self) -> bool:
        """False once the engine-core process is gone: nothing can be generated any more."""
        return self._client.alive

    @property
    def death_reason(self) -> str | None:
        """Why the engine-core process is gone ("the engine core died (killed by SIGKILL)")."""
        return self._client.death_reason

    def _core_died(self, reason: str) -> None:
        for listener in self.death_listeners:
            try:
                listener(reason)
            except Exception:
                log.exception("death listener failed")

    def check_integrity(self) -> str:
        """"" when every KV page is free, cached or owned by one running request; else why."""
        return self._client.call("check_integrity")

    def flush_cache(self) -> bool:
        """Empty the prefix cache; False (nothing done) while requests are queued or running."""
        return self._client.call("flush_cache")

    def apply_chat_template(self, messages: list[dict[str, Any]],
                            add_generation_prompt: bool = True,
                            tools: list[dict[str, Any]] | None = None,
                            **template_kwargs: Any) -> list[int]:
        """Render messages with the chat template and tokenize; ValueError on bad messages.
        `tools` (OpenAI tool objects) and `template_kwargs` (e.g. enable_thinking=False) are
        the template's variables."""
        if not messages:
            raise ValueError("messages must not be empty")
        if not self.chat_template:
            raise ValueError("this model has no chat template; pass --chat-template")
        try:
            text = self.tokenizer.apply_chat_template(
                messages, chat_template=self.chat_template, tokenize=False,
                add_generation_prompt=add_generation_prompt, tools=tools, **template_kwargs)
        except Exception as e:  # template errors are the caller's input problem
            raise ValueError(f"cannot apply the chat template: {e}") from e
        return self.tokenizer.encode(text, add_special_tokens=False)  # the template holds BOS

    def encode_prompt(self, text: str) -> list[int]:
        """A raw text prompt's ids, with the special tokens the tokenizer adds (Gemma's BOS),
        as HF, vLLM and SGLang encode it; chat prompts go through apply_chat_template."""
        return list(self.tokenizer.encode(text, add_special_tokens=True))

    # ---- generation ---------------------------------------------------------------------
    def generate(self, prompt: str | list[str] | None = None,
                 sampling_params: Any = None, input_ids: Any = None, stream: bool = False,
                 return_logprob: bool | None = None, top_logprobs_num: int | None = None,
                 logprob_start_len: int | None = None,
                 token_ids_logprob: list[int] | None = None):
        """Blocking generate: a dict, a list of dicts for batched input, or a chunk iterator.
        With return_logprob, meta_info has "output_token_logprobs" [(logprob, id, None)] and,
        with top_logprobs_num > 0, "output_top_logprobs" (SGLang's keyword arguments, which
        may also be given in sampling_params). logprob_start_len >= 0 adds the prompt's
        "input_token_logprobs" (and "input_top_logprobs") from that position; token_ids_logprob
        adds those tokens' logprobs at each position ("output_token_ids_logprobs", and
        "input_token_ids_logprobs" with prompt logprobs)."""
        coro = self.async_generate(prompt, sampling_params, input_ids, stream,
                                   return_logprob=return_logprob,
                                   top_logprobs_num=top_logprobs_num,
                                   logprob_start_len=logprob_start_len,
                                   token_ids_logprob=token_ids_logprob)
        result = asyncio.run_coroutine_threadsafe(coro, self._loop).result()
        return self._sync_iter(result) if stream else result

    def _sync_iter(self, chunks: RequestStream) -> Iterator[dict]:
        try:
            while True:
                try:
                    yield asyncio.run_coroutine_threadsafe(chunks.__anext__(),
                                                           self._loop).result()
                except StopAsyncIteration:
                    return
        finally:  # the caller stopped reading: stop the request too
            self._loop.call_soon_threadsafe(chunks.abort)

    async def async_generate(self, prompt: str | list[str] | None = None,
                             sampling_params: Any = None, input_ids: Any = None,
                             stream: bool = False, request_id: str | None = None,
                             return_logprob: bool | None = None,
                             top_logprobs_num: int | None = None,
                             logprob_start_len: int | None = None,
                             token_ids_logprob: list[int] | None = None):
        """Like generate, on the caller's event loop. Raises ValueError on bad input,
        EngineDeadError once the engine core is gone. Tokenizing and checking a new grammar
        run off the loop. `request_id` is a label (meta_info["id"], what `abort` takes);
        requests may share one. With stream=True it returns a RequestStream."""
        if prompt is not None:  # a long text takes seconds to tokenize
            prompts, batched = await asyncio.to_thread(self._prompts, prompt, input_ids)
        else:
            prompts, batched = self._prompts(prompt, input_ids)
        params = self._params(sampling_params, len(prompts), return_logprob=return_logprob,
                              top_logprobs_num=top_logprobs_num,
                              logprob_start_len=logprob_start_len,
                              token_ids_logprob=token_ids_logprob)
        for grammar in {p.grammar for p in params if p.grammar is not None}:
            if self.grammar is None:
                raise ValueError(f"{grammar[0]} needs a grammar backend; the server runs "
                                 "with --grammar-backend none")
            await self.grammar.check(*grammar)
        jobs = [(ids, p, i) for ids, p in zip(prompts, params) for i in range(p.n)]
        base = request_id or uuid.uuid4().hex
        rids = [base if len(jobs) == 1 else f"{base}-{k}" for k in range(len(jobs))]
        if stream:
            if len(jobs) != 1:
                raise ValueError("stream=True takes one prompt with n=1")
            ids, p, _ = jobs[0]
            return RequestStream(self, rids[0], ids, p, 0)
        tasks = [asyncio.ensure_future(self._complete(rid, ids, p, i))
                 for rid, (ids, p, i) in zip(rids, jobs)]
        try:
            outs = await asyncio.gather(*tasks)
        finally:  # one failed or the caller gave up: the others stop too
            for task in tasks:
                task.cancel()
        return outs if batched or len(outs) > 1 else outs[0]

    def abort(self, request_id: str, message: str | None = None, status: int = 400) -> None:
        """Abort every running request labelled `request_id`; their results say `message`
        (with an HTTP `status`) if given."""
        for key, label in list(self._labels.items()):
            if label == request_id:
                self._abort_key(key, message, status)

    def _abort_key(self, key: str, message: str | None = None, status: int = 400) -> None:
        if message is not None and key in self._labels:
            self._abort_reasons[key] = (message, status)
        self._client.abort(key)

    def live_request_ids(self) -> list[str]:
        """The labels of the requests submitted and not yet finished."""
        return sorted(set(self._labels.values()))

    def abort_matching(self, pattern: str, message: str, status: int = 400) -> list[str]:
        """Abort every live request whose id matches the regex `pattern` (all for ".*")."""
        rx = re.compile(pattern)
        rids = [rid for rid in self.live_request_ids() if rx.fullmatch(rid)]
        for rid in rids:
            self.abort(rid, message, status)
        return rids

    def _prompts(self, prompt: Any, input_ids: Any) -> tuple[list[list[int]], bool]:
        if (prompt is None) == (input_ids is None):
            raise ValueError("give exactly one of prompt (text) and input_ids")
        if prompt is not None:
            batched = isinstance(prompt, list)
            texts = prompt if batched else [prompt]
            if not all(isinstance(t, str) for t in texts):
                raise ValueError("prompt must be a string or a list of strings")
            prompts = [self.encode_prompt(t) for t in texts]
        else:
            batched = bool(input_ids) and isinstance(input_ids[0], list)
            prompts = input_ids if batched else [input_ids]
        if not prompts:
            raise ValueError("no prompts given")
        for ids in prompts:
            self._check_ids(ids)
        return [list(ids) for ids in prompts], batched

    def _check_ids(self, ids: Any) -> None:
        if not isinstance(ids, list) or not ids:
            raise ValueError("a prompt must have at least one token")
        if not all(isinstance(t, int) and 0 <= t < self.vocab_size for t in ids):
            raise ValueError(f"token ids must be integers in [0, {self.vocab_size})")
        if len(ids) >= self.context_length:
            raise ValueError(f"the prompt has {len(ids)} tokens but the context length is "
                             f"{self.context_length}")

    def _params(self, value: Any, count: int, **logprob_options: Any) -> list[SamplingParams]:
        """One checked SamplingParams per prompt, the keyword logprob options applied."""
        values = value if isinstance(value, list) else [value] * count
        if len(values) != count:
            raise ValueError(f"{len(values)} sampling_params for {count} prompts")
        params = _with_logprob_options([SamplingParams.from_any(v) for v in values],
                                       **logprob_options)
        for p in params:
            for name in ("stop_token_ids", "token_ids_logprob"):
                if any(t >= self.vocab_size for t in getattr(p, name) or []):
                    raise ValueError(f"{name} must be below the vocabulary size "
                                     f"{self.vocab_size}")
            if any(t >= self.vocab_size for t in p.logit_bias or {}):
                raise ValueError(f"logit_bias keys must be token ids below the vocabulary "
                                 f"size {self.vocab_size}")
            held = len(suppressed_ids(p, self.eos_ids)) if p.min_new_tokens else 0
            if held > MAX_SUPPRESSED:
                raise ValueError(f"min_tokens holds back the stop_token_ids and EOS ids, at "
                                 f"most {MAX_SUPPRESSED} distinct ids; this request has {held}")
        return params

    def _seed(self, p: SamplingParams, index: int) -> int:
        return (p.seed + index) if p.seed is not None else self._seeds.getrandbits(32)

    def _submit(self, request: RequestState, ids: list[int], p: SamplingParams, index: int
                ) -> asyncio.Queue:
        """Send the request to the core under a key of the engine's own (its label may be
        anyone's), and return the queue its outputs arrive in."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[TokenOutput] = asyncio.Queue()
        request.key = key = f"{request.rid}#{next(self._keys)}"

        mailbox = self._mailbox(loop)

        def sink(out: TokenOutput) -> None:
            if out.finish_reason is not None:
                self._labels.pop(key, None)
            mailbox.put(queue, out)

        self._labels[key] = request.rid
        try:
            self._client.submit(AddRequest(key, ids, p, self._seed(p, index)), sink)
        except BaseException:
            self._labels.pop(key, None)
            raise
        return queue

    def _mailbox(self, loop: asyncio.AbstractEventLoop) -> _Mailbox:
        with self._mailboxes_lock:
            box = self._mailboxes.get(loop)
            if box is None:
                box = self._mailboxes[loop] = _Mailbox(loop)
            return box

    async def _complete(self, rid: str, ids: list[int], p: SamplingParams, index: int) -> dict:
        request = RequestState(self, rid, ids, p)
        queue = self._submit(request, ids, p, index)
        try:
            while not request.finished:
                request.consume(await queue.get())
        finally:
            if not request.finished:
                self._abort_key(request.key)
        return request.result()

    # ---- lifetime -----------------------------------------------------------------------
    def shutdown(self) -> None:
        if self.grammar is not None:
            self.grammar.close()
        self._client.shutdown()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def _with_logprob_options(params: list[SamplingParams], return_logprob: bool | None,
                          top_logprobs_num: int | None, logprob_start_len: int | None,
                          token_ids_logprob: list[int] | None) -> list[SamplingParams]:
    given = {"return_logprob": return_logprob, "top_logprobs_num": top_logprobs_num,
             "logprob_start_len": logprob_start_len, "token_ids_logprob": token_ids_logprob}
    changes = {name: value for name, value in given.items() if value is not None}
    if not changes:
        return params
    out = [dataclasses.replace(p, **changes) for p in params]
    for p in out:
        p.validate()
    return out


# Markers of a chat template's format, and SGLang's frontend template (sglang.lang.chat_template)
# that writes the same turns.
_SGLANG_TEMPLATES = (("<|start_header_id|>", "llama-3-instruct"), ("<start_of_turn>", "gemma-it"),
                     ("<|im_start|>", "chatml"))


def sglang_chat_template(template: str | None) -> str | None:
    for marker, name in _SGLANG_TEMPLATES:
        if template and marker in template:
            return name
    return None


def _read_template(value: str | None) -> str | None:
    if value is None:
        return None
    path = Path(value)
    return path.read_text() if path.is_file() else value


class _Mailbox:
    """Hands outputs from the core reader thread to one event loop with one wake-up per burst:
    a call_soon_threadsafe per output costs a self-pipe write and a loop pass each, and a step
    of a large batch brings hundreds of outputs at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._lock = threading.Lock()
        self._items: list[tuple[asyncio.Queue, TokenOutput]] = []

    def put(self, queue: asyncio.Queue, out: TokenOutput) -> None:
        with self._lock:
            self._items.append((queue, out))
            if len(self._items) > 1:
                return  # a flush is already on its way
        self.loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for queue, out in items:
            queue.put_nowait(out)
