"""The proxy: unmodified beanstalkd clients talk to a whole cluster through one address.

``app.py`` is the asyncio frame (listening socket, one task per client, the project's
``CommandReader`` on the input, backpressure on the output, signals); ``http.py`` the opt-in HTTP
port (``/healthz``, ``/metrics``, ``/route``); ``stats.py`` and ``metrics.py`` the proxy's own
counters; ``workers.py`` runs several proxy processes on one port; ``cluster.py`` is
``beanrouter cluster`` (bundled shards plus a proxy, in one command). Routing every command is the
routing core's job, reached only through the interfaces in ``seam.py``; the factory of the real
backend is ``beanrouter.proxy.backend.make_backend``; ``console/`` is the console on the HTTP
port.

Layers (docs/architecture.md): ``driver.py`` (``ProxyDriver``: the library's asyncio driver plus
the proxy's fast path and connection pool) is a driver, which imports only ``protocol``,
``core`` and ``router.aio_driver``. The rest is a shell, which imports those, configuration
reading (``router.config``) and a few helpers of ``server`` (counter names, process info,
binding); nothing imports the proxy but the processes and the command line. ``run.py`` (one
proxy process) and ``cluster.py``, ``shards.py``, ``workers.py``, ``child.py`` (supervision) are
the processes layer: they may import the shells, never ``beanrouter.cli``.
"""
