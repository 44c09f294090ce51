"""The import graph of jaxengine/, server/ and pallas_kernels/ (read from the source with ast,
function-local imports included) has no cycle, and every arrow points the way
docs/architecture.md ("Layout") says."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jaxengine", "server", "pallas_kernels")
JAX = ("jax", "jaxlib", "flax", "orbax")
ENGINE_ABOVE_RUNTIME = ("jaxengine.core", "jaxengine.engine", "server")

# module prefix -> what it may not import (prefixes)
FORBIDDEN = {
    "pallas_kernels": ("jaxengine", "server", "flax", "torch", "transformers"),
    "jaxengine.scheduler": JAX + ("jaxengine.runtime", "jaxengine.models", "jaxengine.layers",
                                  "jaxengine.cache", "jaxengine.parallel") + ENGINE_ABOVE_RUNTIME,
    "jaxengine.structured": JAX + ("jaxengine.runtime", "jaxengine.models", "jaxengine.layers",
                                   "jaxengine.cache", "jaxengine.scheduler",
                                   "jaxengine.parallel") + ENGINE_ABOVE_RUNTIME,
    "jaxengine.cache": ("jaxengine.layers", "jaxengine.models", "jaxengine.runtime",
                        "jaxengine.scheduler", "jaxengine.parallel") + ENGINE_ABOVE_RUNTIME,
    "jaxengine.layers": ("jaxengine.models", "jaxengine.runtime", "jaxengine.scheduler",
                         "jaxengine.parallel") + ENGINE_ABOVE_RUNTIME,
    "jaxengine.models": ("jaxengine.runtime", "jaxengine.scheduler",
                         "jaxengine.parallel") + ENGINE_ABOVE_RUNTIME,
    "jaxengine.parallel": ("jaxengine.runtime", "jaxengine.scheduler") + ENGINE_ABOVE_RUNTIME,
    "jaxengine.runtime": ENGINE_ABOVE_RUNTIME,
    "jaxengine.core": ("jaxengine.engine", "server"),
}
# The server sees the engine only through its public API.
SERVER_MAY_IMPORT = ("jaxengine", "jaxengine.sampling_params")
# The runtime sees the scheduler only through the step plan.
RUNTIME_MAY_IMPORT_OF_SCHEDULER = ("jaxengine.scheduler.batch",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {_module_name(f): f for pkg in PACKAGES for f in (ROOT / pkg).rglob("*.py")}


def imports(name: str) -> set[str]:
    """Every module `name` imports (ours resolved to modules, others by full dotted name)."""
    path = modules()[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", None) == "TYPE_CHECKING"
                   for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:   # never executed: annotations only
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for a in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{base}.{a.name}"
                out.add(sub if sub in modules() else base)
    return {m for m in out if m != name}


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


def test_no_import_cycles():
    cycles = find_cycles({m: {d for d in imports(m) if d in modules()} for m in modules()})
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_arrows_point_the_documented_way():
    wrong = []
    for m in sorted(modules()):
        deps = imports(m)
        for prefix, banned in FORBIDDEN.items():
            if _within(m, prefix):
                wrong += [f"{m} -> {d}" for d in sorted(deps)
                          if any(_within(d, b) for b in banned)]
        if _within(m, "jaxengine.runtime"):
            wrong += [f"{m} -> {d}" for d in sorted(deps) if _within(d, "jaxengine.scheduler")
                      and d not in RUNTIME_MAY_IMPORT_OF_SCHEDULER]
        if _within(m, "server"):
            wrong += [f"{m} -> {d}" for d in sorted(deps)
                      if _within(d, "jaxengine") and d not in SERVER_MAY_IMPORT]
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(wrong)


def test_the_checker_sees_imports():
    # A checker that read nothing would pass everything.
    assert "jaxengine.layers.attention" in imports("jaxengine.models.llama")
    assert "jaxengine.scheduler.req" in imports("jaxengine.scheduler.scheduler")
    assert "jax" in imports("pallas_kernels.ragged_paged_attention")
    assert len(modules()) > 60
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_runtime_reads_no_request():
    """The runtime packs StepPlans: no `.req` (a BatchEntry's request) anywhere in it."""
    reads = [f"{m}:{node.lineno}" for m in modules() if _within(m, "jaxengine.runtime")
             for node in ast.walk(ast.parse(modules()[m].read_text()))
             if isinstance(node, ast.Attribute) and node.attr == "req"]
    assert not reads, reads
