"""What SGLang's router (`sglang-router`) asks of a worker beyond /health, /generate, the
OpenAI routes and /flush_cache: the current names of the info endpoints, and /get_load.

The router registers a worker by GET /health, then GET /server_info and /model_info (falling
back to /get_server_info and /get_model_info with a deprecation warning); it takes the
worker's model id from server_info's `served_model_name`. Its power-of-two policy (and its
/get_loads) polls GET /get_load, and reads `num_tokens` from each entry of the list.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from . import native

router = APIRouter()

# Same handlers as the get_ names; an operation id of their own keeps the OpenAPI schema valid.
router.add_api_route("/server_info", native.get_server_info, methods=["GET"],
                     operation_id="server_info")
router.add_api_route("/model_info", native.get_model_info, methods=["GET"],
                     operation_id="model_info")


@router.get("/get_load")
async def get_load(raw: Request) -> JSONResponse:
    """SGLang's shape: one entry per data-parallel rank (one here). `num_tokens` (what the
    router compares) counts the KV tokens held by running requests; queued requests wait only
    while those fill the pool, so it already tells a busy worker from an idle one."""
    stats = await asyncio.to_thread(raw.app.state.engine.get_server_info)
    running, waiting = int(stats["num_running_reqs"]), int(stats["num_queue_reqs"])
    return JSONResponse([{"dp_rank": 0, "num_reqs": running + waiting,
                          "num_waiting_reqs": waiting,
                          "num_tokens": int(stats["num_used_tokens"])}])
