"""The routing core: one sans-IO implementation of the cluster's semantics for every shell.

``Cluster`` is the state shared by every session of a process (configuration, placement, shard
health, metrics); ``Session`` is one client (used tube, watch list, held jobs) whose operations
are generators of ``Round``s (see ``rounds``) that a shell runs: the blocking ``Router``, the
``AsyncRouter`` and the proxy. No sockets, no selectors, no asyncio here; time comes from the
cluster's injected clock. See docs/architecture.md.
"""

from .cluster import Cluster, Metrics, ShardState
from .links import Link
from .rounds import Failure, FailureKind, Op, Outcome, Round, Send
from .session import Held, Session

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
