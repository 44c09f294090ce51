"""`python -m jaxengine.core.process FD PARENT_PID`: the engine-core process that CoreClient
starts.

FD is the child's end of a socket pair; the first message on it is the EngineConfig. This
module is kept apart from jaxengine.core.engine_core so that the classes sent back are pickled
under their importable names.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection

from jaxengine.parent_watch import exit_with_parent


def main() -> None:
    exit_with_parent(int(sys.argv[2]))
    # Only now the heavy imports (JAX, the model code): a parent gone meanwhile is noticed.
    from jaxengine.core.loop import run_engine_core

    conn = Connection(int(sys.argv[1]))
    run_engine_core(conn.recv(), conn)


if __name__ == "__main__":
    main()
