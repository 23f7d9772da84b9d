"""The console: an operator's view of the cluster on the proxy's HTTP port (docs/console.md).

- ``app.py``: ``Console``, the routes, the admin opt-in and its checks, the chart sampler;
- ``view.py``: ``ClusterView``, the overview of shards and tubes (also ``beanrouter status``);
- ``jobs.py``: peeks, ``stats-job`` and the admin actions, on the shards, by global job id;
- ``series.py``: the sampled counters and the chart points (rates, wake-up p50/p99 per shard);
- ``shardio.py``: one short pipelined conversation with a shard (through ``protocol``);
- ``status.py``: ``beanrouter status`` (tables, JSON);
- ``web.py``: the HTTP request and response values; ``static/``: the page, script and style.

Part of the proxy shell (docs/architecture.md, *Layers*): imports ``protocol``, ``core`` (ids,
the configuration model, ``Cluster`` for ``status``) and the proxy's own modules.
"""
