"""The proxy: unmodified beanstalkd clients talk to a whole cluster through one address.

``app.py`` is the asyncio frame (listening socket, one task per client, the project's
``CommandReader`` on the input, backpressure on the output, signals); ``http.py`` the opt-in HTTP
port (``/healthz``, ``/metrics``, ``/route``); ``stats.py`` and ``metrics.py`` the proxy's own
counters; ``workers.py`` runs several proxy processes on one port; ``cluster.py`` is
``beanrouter cluster`` (bundled shards plus a proxy, in one command). Routing every command is the
routing core's job, reached only through the interfaces in ``seam.py``; the factory of the real
backend is ``beanrouter.proxy.backend.make_backend``.
"""
