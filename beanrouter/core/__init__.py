"""The routing core: one sans-IO implementation of the cluster's semantics for every shell.

``Cluster`` is the state shared by every session of a process (configuration, placement, shard
health, metrics); ``Session`` is one client (used tube, watch list, held jobs) whose operations
are generators of ``Round``s (see ``rounds``) that a shell runs: the blocking ``Router``, the
``AsyncRouter`` and the proxy. No sockets, no selectors, no threads, no asyncio, no YAML here;
time comes from the cluster's injected clock. See docs/architecture.md.

Owns, besides the sessions and their operations, the pure helpers they are built on: ``config``
(the configuration model, ``ClusterConfig``/``ShardConfig``; reading YAML is
``beanrouter.router.config``), ``ring`` (placement), ``ids`` (global job ids), ``health``
(down-marking and probing), ``merge`` (merged ``stats``/``stats-tube``) and ``errors`` (the
``RouterError`` family the library raises).

Layers: imports only ``beanrouter.protocol`` and the standard library (plus ``uhashring`` in
``ring``); never ``beanrouter.router``, ``proxy``, ``server`` or ``cli``, not even inside a
function (tests/check_layers.py). The names below are loaded on first access (PEP 562), so that
importing one helper (``beanrouter.core.config``) does not import the sessions and the ring.
"""

TYPE_CHECKING = False

_EXPORTS = {
    **dict.fromkeys(("Cluster", "Metrics", "ShardState"), "beanrouter.core.cluster"),
    "Link": "beanrouter.core.links",
    **dict.fromkeys(
        ("Failure", "FailureKind", "Op", "Outcome", "Round", "Send"), "beanrouter.core.rounds"
    ),
    **dict.fromkeys(("Held", "Session"), "beanrouter.core.session"),
}

if TYPE_CHECKING:
    from .cluster import Cluster, Metrics, ShardState
    from .links import Link
    from .rounds import Failure, FailureKind, Op, Outcome, Round, Send
    from .session import Held, Session


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "Cluster",
    "Failure",
    "FailureKind",
    "Held",
    "Link",
    "Metrics",
    "Op",
    "Outcome",
    "Round",
    "Send",
    "Session",
    "ShardState",
]
