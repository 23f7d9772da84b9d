"""Running a proxy process: the backend factory, the async ``serve`` and ``beanrouter proxy``.

``serve`` is shared by ``beanrouter proxy`` (``run_proxy``) and ``beanrouter cluster``: it builds
the backend in the running loop, starts accepting on an already bound socket (connections that
arrived earlier wait in its backlog), optionally serves the HTTP port, and stops gracefully on
SIGTERM/SIGINT. The backend comes from ``beanrouter.proxy.backend:make_backend`` (the routing
core), or from the ``module:function`` named by ``$BEANROUTER_BACKEND`` (tests plug fakes in
there).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from ..core.config import ClusterConfig
from ..core.errors import ConfigError
from ..router.config import load_config
from ..server.listen import ListenError, bind, inherited_socket
from .app import DEFAULT_GRACE, ProxyServer
from .stats import ProxyStats
from .workers import DRAIN_ENV

if TYPE_CHECKING:
    from .http import HttpEndpoint
    from .seam import BackendFactory  # only annotations: its protocols are slow to make

__all__ = [
    "BACKEND_ENV",
    "DEFAULT_BACKEND",
    "BackendUnavailable",
    "load_backend_factory",
    "raise_nofile_limit",
    "run_proxy",
    "serve",
    "setup_logging",
]

BACKEND_ENV: Final = "BEANROUTER_BACKEND"
DEFAULT_BACKEND: Final = "beanrouter.proxy.backend:make_backend"

log = logging.getLogger("beanrouter.proxy")


class BackendUnavailable(Exception):
    """The backend factory cannot be imported; the message says which and why."""


def load_backend_factory(spec: str | None = None) -> BackendFactory:
    """The factory named ``module:function`` (default: ``$BEANROUTER_BACKEND``, then the core's)."""
    spec = spec or os.environ.get(BACKEND_ENV) or DEFAULT_BACKEND
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailable(f"cannot import the proxy backend {spec!r}: {exc}") from None
    factory = getattr(module, attr or "make_backend", None)
    if not callable(factory):
        raise BackendUnavailable(f"the proxy backend {spec!r} is not a callable")
    return cast("BackendFactory", factory)


def raise_nofile_limit() -> None:
    """Lift the soft open-files limit to the hard one (one fd per client, more per shard link)."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # pragma: no cover - not allowed here
        pass


def setup_logging(level: int) -> None:
    """Log records of ``beanrouter.*`` to stderr, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    root = logging.getLogger("beanrouter")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


async def serve(
    sock: socket.socket,
    config: ClusterConfig,
    factory: BackendFactory,
    *,
    stats: ProxyStats,
    config_path: str | None = None,
    http_sock: socket.socket | None = None,
    http_admin: bool = False,
    grace: float = DEFAULT_GRACE,
    ready: Callable[[ProxyServer], None] | None = None,
) -> None:
    """Serve clients on ``sock`` through a backend made by ``factory`` until SIGTERM/SIGINT (or
    ``ProxyServer.request_stop``), then stop gracefully."""
    backend = factory(config)
    proxy = ProxyServer(backend, stats, config=config, config_path=config_path, grace=grace)
    proxy.install_signals()
    http: HttpEndpoint | None = None
    try:
        await proxy.start(sock)
        if http_sock is not None:
            # Imported here: the HTTP port (and its console, with hmac, OpenSSL's libcrypto,
            # ipaddress, urllib.parse) is off by default, and costs start-up time.
            from .http import HttpEndpoint

            http = HttpEndpoint(proxy, admin=http_admin)
            await http.start(http_sock)
        if ready is not None:
            ready(proxy)
        await proxy.stopped.wait()
    finally:
        if http is not None:
            await http.aclose()
        await proxy.shutdown()
        proxy.remove_signals()


def _names(sock: socket.socket) -> str:
    name = sock.getsockname()
    if isinstance(name, tuple):
        host = f"[{name[0]}]" if ":" in name[0] else name[0]
        return f"{host}:{name[1]}"
    return f"unix:{name}"


def run_proxy(
    config_path: str,
    addr: str,
    port: int,
    *,
    http_addr: str = "127.0.0.1",
    http_port: int | None = None,
    http_admin: bool = False,
    max_job_size: int,
    reuse_port: bool = False,
    grace: float = DEFAULT_GRACE,
) -> int:
    """``beanrouter proxy`` in this process; returns the exit status."""
    # Until the loop takes the signals over: remember a drain, and a reload asked for after the
    # configuration was read (SIGHUP's default would end the process).
    early_drain: list[int] = []
    early_hup: list[int] = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: early_drain.append(signum))
    signal.signal(signal.SIGHUP, lambda signum, frame: early_hup.append(signum))
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"beanrouter proxy: {exc}", file=sys.stderr)
        return 1
    try:
        sock = inherited_socket() or bind(addr, port, reuse_port=reuse_port)
        http_sock = None
        if http_port is not None:
            http_sock = bind(http_addr, http_port, reuse_port=reuse_port)
    except ListenError as exc:
        print(f"beanrouter proxy: {exc}", file=sys.stderr)
        return 1
    try:
        factory = load_backend_factory()
    except BackendUnavailable as exc:
        print(f"beanrouter proxy: {exc}", file=sys.stderr)
        return 1
    raise_nofile_limit()
    stats = ProxyStats(max_job_size=max_job_size)
    stats.draining = bool(early_drain) or os.environ.pop(DRAIN_ENV, "") == "1"

    def ready(proxy: ProxyServer) -> None:
        if early_hup:
            proxy.request_reload()
        where = _names(sock)
        if http_sock is not None:
            where += f" (HTTP on {_names(http_sock)})"
        log.info("listening on %s, %d shards, pid %d", where, len(config.servers), os.getpid())

    asyncio.run(
        serve(
            sock,
            config,
            factory,
            stats=stats,
            config_path=config_path,
            http_sock=http_sock,
            http_admin=http_admin,
            grace=grace,
            ready=ready,
        )
    )
    return 0
