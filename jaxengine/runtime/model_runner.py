"""ModelRunner: owns the parameters, the KV pool and the jitted forward and sampling programs."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh
from tqdm import tqdm

from jaxengine.cache.mha_pool import MHAPool
from jaxengine.config import EngineConfig, compilation_cache_dir
from jaxengine.layers.attention import resolve_backend
from jaxengine.models.registry import arch_from_hf_config, load_model
from jaxengine.parallel import TensorParallel
from jaxengine.runtime.prompt_logprobs import PromptLogprobs, prompt_logprobs
from jaxengine.runtime.sampler import PenaltyState, TopLogprobs, record_tokens, sample
from jaxengine.runtime.step_inputs import (
    StepBuckets,
    StepInputs,
    build_step_inputs,
    padding_step_inputs,
)
from jaxengine.scheduler.batch import StepPlan

log = logging.getLogger(__name__)

CPU_DEFAULT_TOTAL_TOKENS = 16384
# Most (tokens in a step) x (longest context) the reference attention gathers at once.
GATHER_BUDGET = 1 << 18
# Least attention work (chunk tokens x context) prefill may add to a CPU step: twice that of a
# fresh 512-token chunk (measured on 2 cores: an 8k prompt prefills in 48 s with 0.5 s steps;
# half of it: 66 s, 0.37 s steps; twice: 39 s, 0.84 s steps).
CPU_PREFILL_WORK = 1 << 19


def resolve_dtype(name: str, platform: str) -> jnp.dtype:
    if name == "auto":
        # bf16 matmuls are slower than fp32 on XLA:CPU.
        return jnp.dtype(jnp.float32 if platform == "cpu" else jnp.bfloat16)
    return jnp.dtype(name)


def enable_compilation_cache(directory: str | None) -> None:
    jax.config.update("jax_compilation_cache_dir", str(compilation_cache_dir(directory)))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


class ModelRunner:
    def __init__(self, config: EngineConfig, checkpoint, mesh: Mesh | None = None):
        """`mesh`: the ("tp",) devices of this replica (jaxengine.parallel); None: the default
        device, with no sharding anywhere (the single-device programs are unchanged)."""
        enable_compilation_cache(config.server.compilation_cache_dir)
        self.device = jax.devices()[0] if mesh is None else mesh.devices.flat[0]
        self.platform = self.device.platform
        log.info("running on %s (%s)%s", self.device.device_kind, self.platform,
                 "" if mesh is None else f", tensor parallel over {mesh.size} device(s)")
        self.dtype = resolve_dtype(config.model.dtype, self.platform)
        self.arch = arch_from_hf_config(checkpoint.hf_config)
        self.tp = None if mesh is None else TensorParallel.for_model(
            mesh, checkpoint.hf_config, self.arch)
        self.context_length = self._context_length(config)
        t0 = time.perf_counter()
        model = load_model(checkpoint, self.dtype, config.model.attention_backend, tp=self.tp)
        log.info("weights placed in %.1fs", time.perf_counter() - t0)
        self.pool_spec = model.kv_pool_spec(self.dtype)
        self.graphdef, self.state = nnx.split(model)
        self.page_size = config.cache.page_size
        self.num_pages = self._num_pages(config)
        self.max_total_tokens = (self.num_pages - 1) * self.page_size
        self.max_seqs = config.scheduler.max_running_requests
        # What one request may hold: the pool caps it when smaller than the context.
        self.max_context = min(self.context_length, self.max_total_tokens)
        if self.max_context < self.context_length:
            log.warning("the KV pool holds %d tokens, fewer than the context length %d: "
                        "requests are limited to %d tokens (raise --max-total-tokens or "
                        "--mem-fraction-static)", self.max_total_tokens, self.context_length,
                        self.max_context)
        a = self.arch
        backend = resolve_backend(config.model.attention_backend, page_size=self.page_size,
                                  head_dim=a.head_dim, platform=self.platform)
        self.backend = backend
        chunk = config.scheduler.chunked_prefill_size
        self.buckets = StepBuckets(
            page_size=self.page_size, max_seqs=self.max_seqs,
            max_pages_per_seq=-(-self.max_context // self.page_size),
            max_step_tokens=max(chunk, self.max_seqs),
            attention_budget=max(GATHER_BUDGET, self.max_context),
            pages_follow_context=backend == "reference",
            cascade=backend not in ("reference", "blocked"))
        # What the scheduler bounds: the reference's gather; on CPU the attention work prefill
        # adds to a step, twice that of a fresh full chunk, so a long prompt stalls the
        # decodes beside it about as much as a short one does. Accelerators bound a step by
        # --chunked-prefill-size alone, as SGLang does.
        if backend == "reference":
            self.attention_budget: int | None = self.buckets.attention_budget
        elif self.platform == "cpu":
            self.attention_budget = max(2 * chunk * chunk, CPU_PREFILL_WORK)
        else:
            self.attention_budget = None
        pool_sharding = None if self.tp is None else self.tp.pool_sharding(self.pool_spec)
        self.cache = self.pool_spec.zeros(self.num_pages, self.page_size, pool_sharding)
        self.penalties = PenaltyState.zeros(self.max_seqs, a.vocab_size)
        # The last step's sampled tokens, kept on device for the next step (overlap).
        self.prev_tokens = jnp.zeros(self.buckets.seqs, jnp.int32)
        if self.tp is not None:  # small per-request state: a copy on every device
            self.penalties, self.prev_tokens = jax.device_put(
                (self.penalties, self.prev_tokens), self.tp.replicated)
        # A step is two programs, the forward (one per bucket) and sampling (one per sequence
        # bucket): under a grammar the host builds the bitmask while the forward runs, and
        # sampling needs no copy per token bucket.
        self.warmup_seconds, self.warmup_programs = 0.0, 0  # set by warmup()
        self._forward = jax.jit(partial(_forward, self.graphdef, tp=self.tp,
                                        pool_sharding=pool_sharding),
                                donate_argnums=(1, 2))
        self._sample = jax.jit(_sample, donate_argnums=(1, 2))

    def _context_length(self, config: EngineConfig) -> int:
        limit = self.arch.max_position_embeddings
        wanted = config.model.context_length or limit
        if wanted > limit:
            raise ValueError(f"--context-length {wanted} exceeds the model's limit {limit}")
        return wanted

    def _num_pages(self, config: EngineConfig) -> int:
        tokens = config.cache.max_total_tokens
        if tokens is None:
            tokens = self._tokens_from_memory(config.cache.mem_fraction_static)
        return tokens // config.cache.page_size + 1  # + the dummy page 0

    def _tokens_from_memory(self, fraction: float) -> int:
        stats = self.device.memory_stats() if self.platform != "cpu" else None
        if not stats or "bytes_limit" not in stats:
            return CPU_DEFAULT_TOTAL_TOKENS
        # Per device: each holds its shards of the weights (and of the pool, split by KV head).
        weights = sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(self.state))
        free = stats["bytes_limit"] * fraction - weights
        per_token = self.pool_spec.device_bytes_per_token(1 if self.tp is None else self.tp.tp)
        if free < per_token * self.context_length:
            raise ValueError("not enough accelerator memory for a KV pool of one context; "
                             "raise --mem-fraction-static or lower --context-length")
        return int(free // per_token)

    def warmup(self, progress: bool = True) -> None:
        """Compile the forward for every bucket the scheduler can reach and sampling for every
        sequence bucket, with and without a grammar bitmask, so serving never compiles.
        Tracing holds the GIL; XLA compiles (or cache loads) run in threads."""
        t0 = time.perf_counter()
        buckets = self.buckets.all()
        state = (self.state, self.cache, self.penalties, self.prev_tokens)
        seq_buckets = sorted({B for _, B, _ in buckets})
        bar = tqdm(total=len(buckets) + 2 * len(seq_buckets), desc="Compiling step programs",
                   unit="program", disable=not progress)
        words = -(-self.arch.vocab_size // 32)
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            def compile_async(lowered):
                pool.submit(lowered.compile).add_done_callback(lambda _: bar.update())

            for T, B, Pb in buckets:
                compile_async(self._forward.lower(*state, padding_step_inputs(
                    T, B, Pb, max_seqs=self.max_seqs, cascade=self.buckets.cascade)))
            for B in seq_buckets:
                sampling = padding_step_inputs(B, B, 1, max_seqs=self.max_seqs).sampling
                logits = jax.ShapeDtypeStruct((B, self.arch.vocab_size), jnp.float32,
                                              sharding=self.tp and self.tp.replicated)
                for mask in (None, jax.ShapeDtypeStruct((B, words), jnp.int32)):
                    compile_async(self._sample.lower(logits, self.penalties, self.prev_tokens,
                                                     sampling, mask))
        bar.close()
        self.warmup_seconds, self.warmup_programs = time.perf_counter() - t0, bar.n
        log.info("compiled %d step programs in %.1fs", bar.n, self.warmup_seconds)

    def prepare(self, plan: StepPlan) -> StepInputs:
        return build_step_inputs(plan, self.buckets)

    def run(self, inputs: StepInputs
            ) -> tuple[jax.Array, jax.Array, TopLogprobs, PromptLogprobs]:
        """Dispatch one step; returns device arrays (tokens [B], logprobs [B], top
        alternatives, prompt logprobs) without waiting."""
        logits, prompt = self.forward(inputs)
        return (*self.sample(logits, inputs, None), prompt)

    def forward(self, inputs: StepInputs) -> tuple[jax.Array, PromptLogprobs]:
        """Dispatch the model part of a step; its logits [B, V] stay on device for `sample`,
        with the prompt logprobs the step computes."""
        logits, prompt, self.cache, self.penalties = self._forward(
            self.state, self.cache, self.penalties, self.prev_tokens, inputs)
        return logits, prompt

    def sample(self, logits: jax.Array, inputs: StepInputs, bitmask
               ) -> tuple[jax.Array, jax.Array, TopLogprobs]:
        """Dispatch sampling of `forward`'s logits, under a grammar bitmask [B, ceil(V/32)]
        or None."""
        tokens, logprobs, top, self.penalties, self.prev_tokens = self._sample(
            logits, self.penalties, self.prev_tokens, inputs.sampling, bitmask)
        return tokens, logprobs, top


def _forward(graphdef, state, cache: MHAPool, penalties: PenaltyState, prev_tokens: jax.Array,
             inputs: StepInputs, *, tp: TensorParallel | None = None, pool_sharding=None):
    model = nnx.merge(graphdef, state)
    fed = jnp.where(inputs.prev_index >= 0, prev_tokens[jnp.maximum(inputs.prev_index, 0)],
                    inputs.tokens)                                             # [T]
    penalties = record_tokens(penalties, inputs.sampling, inputs.token_slot, fed,
                              inputs.token_is_output)
    hidden, cache = model(fed, inputs.positions, cache, inputs.meta)          # [T, D]
    logits = model.logits(hidden[inputs.logits_indices])                       # [B, V]
    prompt = prompt_logprobs(model.logits, hidden, inputs.logprob_rows, inputs.logprob_targets,
                             inputs.logprob_row_seqs, inputs.sampling.logprob_ids,
                             inputs.num_logprob_rows)
    if tp is not None:
        # Pinned so that the pool is donated in place, and so that sampling (its own program,
        # compiled at warm-up for replicated logits) sees the sharding it was compiled for.
        cache = jax.lax.with_sharding_constraint(cache, pool_sharding)
        # Vocabulary-parallel first: otherwise XLA may gather the whole LM head to each device
        # rather than the [B, V] logits.
        logits = jax.lax.with_sharding_constraint(logits, tp.logits_sharding)
        logits = jax.lax.with_sharding_constraint(logits, tp.replicated)
    return logits, prompt, cache, penalties


def _sample(logits: jax.Array, penalties: PenaltyState, prev_tokens: jax.Array,
            sampling, bitmask: jax.Array | None = None):
    tokens, logprobs, top, penalties = sample(logits, penalties, sampling, bitmask)
    return tokens, logprobs, top, penalties, prev_tokens.at[:tokens.shape[0]].set(tokens)
