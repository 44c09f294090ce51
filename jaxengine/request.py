"""One request on the API side: `RequestState` folds the engine core's TokenOutputs into
text (incremental detokenizing, stop-string trimming), logprobs, timings and meta_info;
`RequestStream` is what a streamed request reads."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from jaxengine.core.messages import TokenOutput
from jaxengine.detokenizer import IncrementalDetokenizer
from jaxengine.sampling_params import SamplingParams

if TYPE_CHECKING:
    from jaxengine.engine import Engine

log = logging.getLogger(__name__)


class RequestStream:
    """The chunks of one streamed request (`async for chunk in stream`): text deltas, the
    new output ids (those of every step not yet read), meta_info; the last one has a
    finish_reason. The request is submitted at
    the first read; `abort()` stops it if it is still running (idempotent)."""

    def __init__(self, engine: Engine, rid: str, ids: list[int], p: SamplingParams,
                 index: int):
        self._engine, self._args = engine, (ids, p, index)
        self._request = RequestState(engine, rid, ids, p)
        self._queue: asyncio.Queue | None = None

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._request.finished:
            raise StopAsyncIteration
        if self._queue is None:
            self._queue = self._engine._submit(self._request, *self._args)
        try:
            out = await self._queue.get()
        except asyncio.CancelledError:
            self.abort()
            raise
        chunk = self._request.consume(out)
        # A reader that fell behind takes what has piled up as one chunk: under load the
        # stream then costs one write per step it reads, not one per token.
        while not self._request.finished and not self._queue.empty():
            more = self._request.consume(self._queue.get_nowait())
            chunk = {"text": chunk["text"] + more["text"],
                     "output_ids": chunk["output_ids"] + more["output_ids"],
                     "meta_info": more["meta_info"]}
        return chunk

    def abort(self) -> None:
        if self._queue is not None and not self._request.finished:
            self._engine._abort_key(self._request.key)


class RequestState:
    """The API side of one request: detokenizes outputs and builds the result dicts."""

    def __init__(self, engine: Engine, rid: str, ids: list[int], p: SamplingParams):
        self.rid, self.prompt_tokens, self.params = rid, len(ids), p
        self.key = ""  # the engine's own id for it, once submitted
        self.detok = IncrementalDetokenizer(
            engine.tokenizer, skip_special_tokens=p.skip_special_tokens,
            spaces_between_special_tokens=p.spaces_between_special_tokens,
            stop_strs=p.stop_strs)
        self.engine = engine
        self.start = time.perf_counter()
        self.last_output: float | None = None
        self.first_token: float | None = None
        self.queue_time: float | None = None
        self.itl: list[float] = []
        self.text = ""
        self.output_ids: list[int] = []
        self.finish: dict[str, Any] | None = None
        self.cached_tokens = 0
        self.model_steps = 0
        # SGLang's shapes: (logprob, token id, text) per output token; text is left None.
        self.token_logprobs: list[tuple[float, int, None]] = []
        self.top_logprobs: list[list[tuple[float, int, None]]] = []
        # Prompt logprobs, the same shapes (logprob None at position 0), from the first output.
        self.prompt_ids = ids if p.wants_prompt_logprobs else None
        self.input_token_logprobs: list[tuple[float | None, int, None]] = []
        self.input_top_logprobs: list[list[tuple[float, int, None]] | None] = []
        # token_ids_logprob: per position, (logprob, token id, text) of each token asked.
        self.ids_logprobs: list[list[tuple[float, int, None]]] = []
        self.input_ids_logprobs: list[list[tuple[float, int, None]] | None] = []

    @property
    def finished(self) -> bool:
        return self.finish is not None

    def consume(self, out: TokenOutput) -> dict[str, Any]:
        """Fold one TokenOutput in; return the streaming chunk (deltas) it makes."""
        self._time(out)
        self.output_ids.extend(out.new_ids)
        if out.input_logprobs is not None:
            self._input_logprobs(out)
        if self.params.return_logprob:
            self.token_logprobs += [(_floor(lp), t, None)
                                    for lp, t in zip(out.logprobs, out.new_ids)]
            if self.params.top_logprobs_num:
                self.top_logprobs += [[(_floor(lp), t, None) for t, lp in row]
                                      for row in out.top_logprobs or [[]] * len(out.new_ids)]
            if self.params.token_ids_logprob:
                self.ids_logprobs += [self._asked(row) for row in out.ids_logprobs or []]
        self.cached_tokens = max(self.cached_tokens, out.cached_tokens)
        self.model_steps = out.num_steps or self.model_steps
        if out.finish_reason is None:
            delta = self.detok.push(out.new_ids)
        else:
            matched = out.matched_stop
            trim = isinstance(matched, str) and not self.params.no_stop_trim
            delta = self.detok.finish(out.new_ids, matched if trim else None)
            self.finish = {"type": out.finish_reason, "matched": matched}
            if out.finish_reason == "length":
                self.finish = {"type": "length", "length": len(self.output_ids)}
            stashed = self.engine._abort_reasons.pop(self.key, None)
            if out.finish_reason == "abort":
                self.finish = self._abort_reason(out, stashed)
            self._report()
        self.text = self.detok.final if self.finished else self.text + delta
        return {"text": delta, "output_ids": list(out.new_ids), "meta_info": self.meta_info()}

    def _input_logprobs(self, out: TokenOutput) -> None:
        ids = self.prompt_ids[len(self.prompt_ids) - len(out.input_logprobs):]
        self.input_token_logprobs = [(None if lp is None else _floor(lp), t, None)
                                     for lp, t in zip(out.input_logprobs, ids)]
        if out.input_top is not None:
            self.input_top_logprobs = [None if row is None else
                                       [(_floor(lp), t, None) for t, lp in row]
                                       for row in out.input_top]
        if out.input_ids_logprobs is not None:
            self.input_ids_logprobs = [None if row is None else self._asked(row)
                                       for row in out.input_ids_logprobs]

    def _asked(self, values: list[float]) -> list[tuple[float, int, None]]:
        return [(_floor(lp), t, None) for lp, t in zip(values, self.params.token_ids_logprob)]

    def _time(self, out: TokenOutput) -> None:
        now = time.perf_counter()
        if out.queue_time is not None:
            self.queue_time = out.queue_time
        if out.new_ids:
            if self.first_token is None:
                self.first_token = now
            elif self.last_output is not None:
                self.itl.append((now - self.last_output) / len(out.new_ids))
            self.last_output = now

    @staticmethod
    def _abort_reason(out: TokenOutput, stashed: tuple[str, int] | None) -> dict[str, Any]:
        message, status = stashed or (None, None)
        if out.abort_message is not None:
            message, status = out.abort_message, out.abort_status or 500
        elif out.abort_status == 503:
            message, status = "The request queue is full; retry later", 503
        finish: dict[str, Any] = {"type": "abort"}
        if message is not None:
            finish.update(message=message, status_code=status)
        return finish

    def timings(self) -> dict[str, Any]:
        """What metrics observe once the request is done (seconds; None if it never ran)."""
        return {"ttft": None if self.first_token is None else self.first_token - self.start,
                "itl": self.itl, "e2e": time.perf_counter() - self.start,
                "queue_time": self.queue_time, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": len(self.output_ids), "cached_tokens": self.cached_tokens,
                "finish_reason": (self.finish or {}).get("type")}

    def _report(self) -> None:
        for listener in self.engine.request_listeners:
            try:
                listener(self.timings())
            except Exception:  # a metrics bug must not lose the answer
                log.exception("request listener failed")

    def meta_info(self) -> dict[str, Any]:
        meta = {"id": self.rid, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": len(self.output_ids), "cached_tokens": self.cached_tokens,
                "finish_reason": self.finish, "e2e_latency": time.perf_counter() - self.start,
                "model_steps": self.model_steps}
        if self.params.return_logprob:
            # Copies: a streamed chunk must not grow while its reader is behind.
            meta["output_token_logprobs"] = list(self.token_logprobs)
            if self.params.top_logprobs_num:
                meta["output_top_logprobs"] = list(self.top_logprobs)
            if self.params.token_ids_logprob:
                meta["output_token_ids_logprobs"] = list(self.ids_logprobs)
            if self.prompt_ids is not None:
                meta["input_token_logprobs"] = self.input_token_logprobs
                if self.params.top_logprobs_num:
                    meta["input_top_logprobs"] = self.input_top_logprobs
                if self.params.token_ids_logprob:
                    meta["input_token_ids_logprobs"] = self.input_ids_logprobs
        return meta

    def result(self) -> dict[str, Any]:
        return {"text": self.text, "output_ids": self.output_ids, "meta_info": self.meta_info()}


def _floor(logprob: float) -> float:
    """A banned token's -inf as OpenAI's -9999.0, so that every answer is valid JSON."""
    return max(logprob, -9999.0)
