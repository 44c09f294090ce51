"""tools/launch_router.py's command line and the commands it builds (no process started)."""

from __future__ import annotations

import pytest

from tools.launch_router import parse_args
from tools.router_fleet import Fleet


def test_unknown_flags_go_to_the_workers() -> None:
    args, worker_flags = parse_args(["--workers", "3", "--context-length", "2048", "--port",
                                     "9000", "--", "--max-total-tokens", "8192"])
    assert (args.workers, args.port, args.policy) == (3, 9000, "cache_aware")
    assert worker_flags == ["--context-length", "2048", "--max-total-tokens", "8192"]


def test_bad_worker_counts_are_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--workers", "0"])
    with pytest.raises(SystemExit):
        parse_args(["--workers", "1", "--policy", "power_of_two"])


def test_fleet_commands() -> None:
    fleet = Fleet(2, ["--api-key", "K", "--skip-server-warmup"], port=9000,
                  router_args=["--health-check-interval-secs", "1"])
    assert fleet.worker_urls == ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
    w = fleet.workers[1].cmd
    assert w[w.index("--port") + 1] == "9002" and w[-3:] == ["--api-key", "K",
                                                             "--skip-server-warmup"]
    r = fleet.router.cmd
    assert r[r.index("--worker-urls") + 1:r.index("--worker-urls") + 3] == fleet.worker_urls
    assert r[r.index("--api-key") + 1] == "K"
    # The caller's flags come last, so they win over the launcher's defaults.
    assert r[-2:] == ["--health-check-interval-secs", "1"]
