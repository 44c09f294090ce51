"""Start-up time of `python -m jaxengine.serve` to ready (/health 200), cold and warm.

Cold: a fresh, empty compilation cache directory, so every step program compiles. Warm: the
same directory again, as a restarted server finds it. Both with the start-up warm-up on (every
step shape compiled before the server is ready) and the default model.

    python -m benchmarks.bench_startup
"""

from __future__ import annotations

import tempfile

import httpx

from benchmarks._server import serving


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        times = {}
        for name in ("cold", "warm"):
            with serving(["--compilation-cache-dir", cache]) as server:
                times[name] = server.startup_seconds
                info = httpx.get(server.url + "/get_server_info", timeout=60).json()
        print(f"start-up to ready: cold {times['cold']:.1f} s, warm {times['warm']:.1f} s "
              f"({info.get('device', '?')})")


if __name__ == "__main__":
    main()
