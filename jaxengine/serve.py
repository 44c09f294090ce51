"""`python -m jaxengine.serve [flags]`: load the engine, then serve the HTTP API with uvicorn.

The port is bound before the model loads, so a busy port fails in a second rather than after
minutes of loading; while the engine loads (on a thread) the server already answers, with 503
to everything, /health included. "ready on http://host:port" is logged once the engine is
loaded and requests are served. The engine is shut down however the server exits (Ctrl-C,
SIGTERM, an error).

Exit status: 0 after SIGTERM or Ctrl-C (in-flight requests drained); 1 if the engine failed
to start, or if its engine-core process died while serving. A dead core is not restarted in
place: requests in flight end at once with a 503 error, new ones get 503 while the server
closes its connections, and the process exits within seconds so that its supervisor (systemd,
Docker, Kubernetes, tools.launch_router) restarts it, as a server that lost its engine has.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
from types import FrameType

import uvicorn

from jaxengine.config import EngineConfig, from_cli

logger = logging.getLogger("jaxengine.serve")
KEEP_ALIVE_S = 75  # nginx's default


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for host:port (IPv4 or IPv6); OSError if the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn.Server that announces readiness once it is listening, and drains the engine
    before uvicorn closes the connections."""

    def __init__(self, config: uvicorn.Config, url: str, grace_s: float) -> None:
        super().__init__(config)
        self.url = url
        self.grace_s = grace_s

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            logger.info("listening on %s; loading the engine", self.url)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        from server.lifecycle import drain

        for server in self.servers:  # no new connections while draining
            server.close()
        app = self.config.app.app  # None while the engine is still loading
        if app is not None and not self.force_exit:  # a second Ctrl-C skips the wait
            await drain(app, self.grace_s)
        await super().shutdown(sockets)


def serve(config: EngineConfig) -> None:
    """Load the engine described by `config` and serve it until interrupted."""
    from server.lifecycle import Starting

    host, port = config.server.host, config.server.port
    try:
        sock = bind_socket(host, port)
    except OSError as e:
        raise SystemExit(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    starting = Starting()
    # lifespan off: the app is swapped in after start-up, and it has no lifespan work anyway.
    # Idle keep-alive connections stay open longer than clients keep them (httpx: 5 s, as
    # uvicorn's default), so a client never sends on a connection the server is closing.
    uv_config = uvicorn.Config(starting, log_level=config.server.log_level,
                               timeout_graceful_shutdown=5, lifespan="off",
                               timeout_keep_alive=KEEP_ALIVE_S)
    display_host = f"[{host}]" if ":" in host else host
    server = _Server(uv_config, f"http://{display_host}:{port}",
                     config.server.graceful_shutdown_timeout)
    loaded: dict[str, object] = {}
    loader = threading.Thread(target=_load, args=(config, starting, server, loaded),
                              daemon=True, name="jaxengine-load")
    loader.start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        engine = loaded.get("engine")
        if engine is not None:
            engine.shutdown()
    if "error" in loaded:
        raise SystemExit(f"the engine failed to start: {loaded['error']}")
    if "died" in loaded:
        raise SystemExit(f"{loaded['died']}; exiting so that the server is restarted")


def _load(config: EngineConfig, starting, server: _Server, loaded: dict[str, object]) -> None:
    """Load the engine and swap the real app in; on failure, stop the server."""
    from jaxengine.engine import Engine  # heavy: JAX and the model come with it
    from server.app import create_app

    try:
        engine = Engine(config=config)
        loaded["engine"] = engine
        app = create_app(engine)

        def core_died(reason: str) -> None:
            logger.error("%s: the server exits (status 1) so that its supervisor restarts it",
                         reason)
            app.state.stop_reason = f"{reason}; the server is restarting"
            app.state.draining = True
            loaded["died"] = reason
            server.should_exit = True

        engine.death_listeners.append(core_died)
        if not engine.alive:  # it died before the listener was in place
            core_died(engine.death_reason or "the engine core died")
        starting.ready(app)
        logger.info("ready on %s", server.url)
    except Exception as e:  # reported by `serve` once uvicorn has stopped
        logger.exception("the engine failed to start")
        loaded["error"] = e
        server.should_exit = True


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # uvicorn handles SIGTERM itself while serving and re-raises it once it has shut down;
    # turning it into SystemExit (instead of the default instant death) lets `serve` run its
    # `finally` and stop the engine-core process. A requested stop that drained is a success.
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    config = from_cli(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    logging.basicConfig(level=config.server.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config.parallel.node_rank > 0:  # multi-host: only node 0 serves HTTP
        from jaxengine.core.multihost import run_follower

        run_follower(config)
        return
    serve(config)


if __name__ == "__main__":
    main()
