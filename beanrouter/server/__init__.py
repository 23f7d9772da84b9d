"""The bundled beanstalkd-compatible server: a pure engine, a dispatcher and an asyncio shell.

Owns ``engine.py`` (beanstalkd's jobs and tubes, pure, injected clock), ``dispatch.py``, the
asyncio shell ``app.py``, ``binlog/`` (persistence), ``options.py``/``listen.py`` (flags and
binding, light: on the start-up path) and ``cli.py`` (the ``beanrouter server`` process).

Layers (docs/architecture.md): a shell; imports ``protocol`` and the standard library only, never
the routing core, ``router``, ``proxy`` or ``cli``. ``cli.py`` is the processes layer.
"""
