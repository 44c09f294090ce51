"""For child processes of the engine (the engine core, grammar sandboxes): one whose parent is
gone (killed, or stopped while the child was still starting) serves nobody, so it exits
instead of running on as an orphan."""

from __future__ import annotations

import os
import threading
import time


def exit_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """Start a daemon thread that ends this process once its parent, the process `parent`
    that started it, has exited. The parent passes its pid: read here with getppid, it would
    already be the reaper's if the parent died while this process was still starting."""

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, daemon=True, name="jaxengine-parent-watch").start()
