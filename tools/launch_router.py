"""Cache-aware data parallelism on one machine with one command: N jaxengine workers behind
SGLang's router (`pip install -e '.[router]'`).

    python -m tools.launch_router --workers 2                        # router on :30000
    python -m tools.launch_router --workers 4 --port 8000 --policy round_robin \\
        --router-args "--balance-abs-threshold 8" -- --max-total-tokens 65536

Flags this launcher does not know go to every worker (`python -m jaxengine.serve` flags);
`--` may separate them; a worker `--api-key` is given to the router too (clients then send
it to the router). Workers listen on 127.0.0.1, ports PORT+1 .. PORT+N unless
`--worker-ports` says otherwise; clients talk to the router on --host:--port. A worker that
exits is restarted (the router takes it back once /health answers 200 again), unless
--no-restart. Ctrl-C or SIGTERM stops the router, then drains and stops the workers.

On several machines, start workers and the router yourself (see README, "Scale out").
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import shlex
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from tools.router_fleet import Fleet

log = logging.getLogger("jaxengine.launch_router")
POLICIES = ("cache_aware", "round_robin", "power_of_two", "random")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="python -m tools.launch_router",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                allow_abbrev=False)  # an abbreviation could eat a worker flag
    p.add_argument("--workers", type=int, default=2, help="jaxengine workers to start")
    p.add_argument("--host", default="127.0.0.1", help="the router's host")
    p.add_argument("--port", type=int, default=30000, help="the router's port")
    p.add_argument("--worker-host", default="127.0.0.1")
    p.add_argument("--worker-ports", type=int, nargs="+", help="default: PORT+1 .. PORT+N")
    p.add_argument("--policy", choices=POLICIES, default="cache_aware")
    p.add_argument("--router-args", default="",
                   help="more sglang_router.launch_router flags, as one string")
    p.add_argument("--log-dir", type=Path,
                   help="write worker-I.log and router.log here (default: this console)")
    p.add_argument("--no-restart", action="store_true", help="do not restart dead workers")
    p.add_argument("--startup-timeout", type=float, default=1800.0, help="seconds")
    args, worker_flags = p.parse_known_args(argv)
    if args.workers < 1:
        p.error("--workers must be >= 1")
    if args.policy == "power_of_two" and args.workers < 2:
        p.error("--policy power_of_two needs at least 2 workers")
    return args, [f for f in worker_flags if f != "--"]


def supervise(fleet: Fleet, restart: bool) -> int:
    """Until the router exits: restart workers that die, waiting longer after each quick
    death so a worker that cannot start does not spin. Returns the router's exit code."""
    backoff = [1.0] * len(fleet.workers)
    due: dict[int, float] = {}
    while fleet.router.running:
        now = time.monotonic()
        for i, w in enumerate(fleet.workers):
            if w.running:
                continue
            if i not in due:
                lived = now - w.started_at
                backoff[i] = 1.0 if lived > 120 else min(backoff[i] * 2, 60.0)
                due[i] = now + backoff[i] if restart else float("inf")
                log.warning("%s (%s) exited with code %s after %.0f s; %s", w.name, w.url,
                            w.proc.returncode, lived,
                            f"restarting in {backoff[i]:.0f} s" if restart else "not restarted")
            elif now >= due[i]:
                del due[i]
                w.start()
        time.sleep(0.5)
    return fleet.router.proc.returncode or 1  # the router never exits on its own


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds `main` through its `finally`, which stops the fleet


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not every health poll
    args, worker_flags = parse_args(argv)
    if importlib.util.find_spec("sglang_router") is None:
        raise SystemExit("sglang-router is not installed: pip install -e '.[router]' "
                         "(or pip install sglang-router)")
    if args.log_dir:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(args.workers, worker_flags, host=args.host, port=args.port,
                  worker_host=args.worker_host, worker_ports=args.worker_ports,
                  policy=args.policy, router_args=shlex.split(args.router_args),
                  log_dir=args.log_dir)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    code = 0
    try:
        log.info("starting %d workers: %s", args.workers, " ".join(fleet.worker_urls))
        fleet.start(timeout=args.startup_timeout)
        log.info("router (%s) ready on %s", args.policy, fleet.router.url)
        code = supervise(fleet, restart=not args.no_restart)
        log.error("the router exited with code %s:\n%s", code, fleet.router.log_tail())
    except KeyboardInterrupt:
        log.info("stopping")
    except RuntimeError as e:
        log.error("%s", e)
        code = 1
    finally:
        fleet.stop()
    sys.exit(code)


if __name__ == "__main__":
    main()
