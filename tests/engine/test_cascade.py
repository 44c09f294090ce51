"""Cascade attention over a radix prefix shared in the step gives the plain attention's tokens."""

from __future__ import annotations

import numpy as np

from jaxengine.config import EngineConfig
from jaxengine.core.engine_core import EngineCore
from jaxengine.core.messages import AddRequest
from jaxengine.sampling_params import SamplingParams
from jaxengine.scheduler import batch as batch_module
from jaxengine.scheduler import cascade as cascade_module

PARAMS = SamplingParams(temperature=0.0, max_new_tokens=5, ignore_eos=True)


def _generate(core: EngineCore, prompts: list[list[int]], first: int) -> list[list[int]]:
    """Run prompts[:first] to completion (they fill the radix cache), then the rest together."""
    out: dict[str, list[int]] = {}
    for wave in (range(first), range(first, len(prompts))):
        for i in wave:
            core.add_request(AddRequest(f"r{i}", prompts[i], PARAMS, seed=0))
        while core.has_work:
            for o in core.step():
                out.setdefault(o.rid, []).extend(o.new_ids)
    return [out[f"r{i}"] for i in range(len(prompts))]


def test_cascade_over_a_shared_radix_prefix_gives_the_reference_tokens(tiny_model_dir,
                                                                       monkeypatch):
    monkeypatch.setattr(cascade_module, "MIN_PREFIX_TOKENS", 8)
    monkeypatch.setattr(cascade_module, "MIN_SHARING_SEQS", 3)
    shared_lengths = []

    def spy(entries, page_size):
        shared = cascade_module.shared_prefix(entries, page_size)
        shared_lengths.append(shared.length if shared else 0)
        return shared

    monkeypatch.setattr(batch_module, "shared_prefix", spy)
    rng = np.random.default_rng(0)
    prefix = rng.integers(100, 40000, 13).tolist()
    prompts = [prefix + rng.integers(100, 40000, 3).tolist() for _ in range(5)]

    def generate(backend: str) -> list[list[int]]:
        config = EngineConfig.from_kwargs(model_path=tiny_model_dir, attention_backend=backend,
                                          page_size=4, max_running_requests=4,
                                          context_length=64, skip_server_warmup=True)
        return _generate(EngineCore(config), prompts, first=1)

    cascade = generate("pallas-interpret")
    assert max(shared_lengths) == 12   # three whole pages of the 13-token prefix
    assert cascade == generate("reference")
