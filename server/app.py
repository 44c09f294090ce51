"""The FastAPI application: `create_app(engine)` wires the routers, the error handlers and
the model list around one already-loaded Engine (only its public API is used)."""

from __future__ import annotations

import time
from importlib import metadata
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from . import (
    metrics,
    native,
    openai_chat,
    openai_completions,
    openai_responses,
    router_endpoints,
    tokenize,
)
from .auth import APIKeyMiddleware
from .body_guard import BodyGuard, body_limit
from .errors import APIError, InternalErrors, document_400s, install_error_handlers
from .generation import ClientDisconnected
from .lifecycle import RefuseWhileDraining
from .protocol import ModelCard, ModelList


def _version() -> str:
    try:
        return metadata.version("jaxengine")
    except metadata.PackageNotFoundError:
        return "unknown"


def create_app(engine: Any) -> FastAPI:
    """An OpenAI-compatible (plus SGLang-native) HTTP API in front of `engine`."""
    app = FastAPI(title="jaxengine", version=_version(),
                  description="OpenAI-compatible LLM server on JAX")
    info = engine.get_model_info()
    flags = engine.config.server
    app.state.engine = engine
    app.state.auto_truncate = flags.allow_auto_truncate
    app.state.draining = False  # set on shutdown: new work is refused with 503
    app.state.stop_reason = None  # why, when it is not a plain shutdown
    app.state.vocab_size = int(info.get("vocab_size") or len(engine.tokenizer))
    app.state.responses = openai_responses.ResponseStore()
    # llguidance matches a tokenizer's added tokens only by id: tool grammars name them so.
    app.state.added_tokens = {token.content: i for i, token in
                                engine.tokenizer.added_tokens_decoder.items()}
    app.state.model_card = ModelCard(id=engine.served_model_name, created=int(time.time()),
                                     root=str(info.get("model_path") or engine.served_model_name),
                                     max_model_len=engine.context_length)

    install_error_handlers(app)
    document_400s(app)

    @app.exception_handler(ClientDisconnected)
    async def _gone(request: Request, exc: ClientDisconnected) -> Response:
        return Response(status_code=499)  # nobody is listening; nginx's "client closed"

    app.include_router(openai_chat.router)
    app.include_router(openai_completions.router)
    app.include_router(openai_responses.router)
    app.include_router(native.router)
    app.include_router(router_endpoints.router)
    app.include_router(tokenize.router)
    if flags.enable_metrics:
        app.state.metrics = metrics.ServerMetrics(engine, engine.served_model_name)
        app.include_router(metrics.router)
    # Innermost first: a bug's 500 keeps the connection; bodies are checked once the caller
    # is known to be allowed in.
    app.add_middleware(InternalErrors)
    app.add_middleware(BodyGuard, max_bytes=body_limit(engine.context_length))
    if flags.api_key:
        app.add_middleware(APIKeyMiddleware, api_key=flags.api_key)
    # Added last, so it runs first: while draining, everyone gets a fast 503.
    app.add_middleware(RefuseWhileDraining)

    @app.get("/v1/models")
    async def list_models(raw: Request) -> JSONResponse:
        return JSONResponse(ModelList(data=[raw.app.state.model_card]).model_dump())

    @app.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str, raw: Request) -> JSONResponse:
        card: ModelCard = raw.app.state.model_card
        if model_id != card.id:
            raise APIError(f"The model '{model_id}' does not exist; this server serves "
                           f"'{card.id}'", status=404, param="model", code="model_not_found")
        return JSONResponse(card.model_dump())

    @app.get("/version")
    async def version() -> JSONResponse:
        return JSONResponse({"version": _version()})

    return app
