"""jaxengine: a fast LLM serving engine on JAX.

    import jaxengine as je
    with je.Engine() as llm:
        print(llm.generate("Hello", je.SamplingParams(max_new_tokens=16))["text"])
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

from jaxengine.core.client import EngineDeadError
from jaxengine.engine import Engine
from jaxengine.request import RequestStream
from jaxengine.sampling_params import SamplingParams
from jaxengine.structured.schema import close_objects

__all__ = ["Engine", "EngineDeadError", "RequestStream", "SamplingParams", "close_objects",
           "generate"]

_cached: Engine | None = None
_cached_lock = threading.Lock()


def generate(prompt: str | list[str], **sampling: Any):
    """One call: generate with the default model on an Engine created once and reused.

    Keywords are SamplingParams fields, e.g. `generate(["hi", "hello"], max_new_tokens=16)`.
    """
    global _cached
    with _cached_lock:
        if _cached is None:
            _cached = Engine()
            atexit.register(_cached.shutdown)
    return _cached.generate(prompt, SamplingParams(**sampling))
