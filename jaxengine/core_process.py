"""`python -m jaxengine.core_process FD`: the engine-core process that CoreClient starts.

FD is the child's end of a socket pair; the first message on it is the EngineConfig. This
module is kept apart from jaxengine.engine_core so that the classes sent back are pickled
under their importable names.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from multiprocessing.connection import Connection

from jaxengine.engine_core import run_engine_core


def _exit_with_parent(parent: int) -> None:
    """A core whose API process is gone (killed, or stopped while this core was still
    compiling) serves nobody: exit instead of running on as an orphan."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def main() -> None:
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True,
                     name="jaxengine-parent-watch").start()
    conn = Connection(int(sys.argv[1]))
    run_engine_core(conn.recv(), conn)


if __name__ == "__main__":
    main()
