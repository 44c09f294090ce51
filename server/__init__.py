"""The HTTP server: an OpenAI-compatible API (plus SGLang's native endpoints) over Engine.

Modules, one job each:
    app.py                 create_app(engine): routers, error handlers, /v1/models
    protocol.py            pydantic request/response bodies
    inputs.py              request -> token ids and sampling params, with the 400 checks
    generation.py          n choices / batched prompts as concurrent engine requests, SSE
    logprobs.py            the engine's per-token logprobs in OpenAI's shapes
    openai_chat.py         POST /v1/chat/completions
    openai_completions.py  POST /v1/completions
    openai_responses.py    POST /v1/responses, GET /v1/responses/{id} (responses_input.py:
                           the request, as a chat request)
    answer.py              a choice's text as reasoning_content, content and tool_calls
    reasoning.py           --reasoning-parser: thinking split from the answer
    tools/                 tool calling: formats, the streaming parser, call grammars
    native.py              /generate, /health, /get_model_info, /get_server_info, /abort_request
    tokenize.py            /v1/tokenize, /v1/detokenize
    metrics.py             /metrics (--enable-metrics): Prometheus gauges, counters, histograms
    auth.py                --api-key: Bearer check, constant-time
    lifecycle.py           503 while loading, graceful drain on shutdown
    errors.py              OpenAI-style error bodies; bad input is always a 400
"""

from .app import create_app

__all__ = ["create_app"]
