"""`python -m jaxengine.structured.sandbox_process FD PARENT_PID`: a grammar sandbox worker (see
sandbox.py). It reads (tokenizer JSON, vocab size, EOS ids, memory limit) first, answers
"ready", then each (kind, spec) with None or the reason the grammar fails. Kept apart from
sandbox.py so that the module run as __main__ is not also imported by the package.
"""

from __future__ import annotations

import resource
import sys
from multiprocessing.connection import Connection

from jaxengine.parent_watch import exit_with_parent
from jaxengine.structured.backend import GrammarBackend


def main() -> None:
    conn = Connection(int(sys.argv[1]))
    exit_with_parent(int(sys.argv[2]))
    tokenizer_json, vocab_size, eos_ids, memory_bytes = conn.recv()
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    backend = GrammarBackend(tokenizer_json, vocab_size, eos_ids, cache_size=1)
    backend.check("regex", "x")  # builds llguidance's tokenizer before the first real job
    conn.send("ready")
    while True:
        try:
            kind, spec = conn.recv()
        except EOFError:
            return
        try:
            backend.check(kind, spec)
            verdict = None
        except ValueError as e:
            verdict = str(e)
        except MemoryError:
            verdict = "compiling the grammar ran out of memory"
        conn.send(verdict)


if __name__ == "__main__":
    main()
