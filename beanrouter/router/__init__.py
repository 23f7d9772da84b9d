"""The router library: many independent beanstalkd shards used like one beanstalkd.

``Router`` (the client), ``Job``, the exceptions, and the pure cores: ``ring`` (placement),
``ids`` (global job ids), ``config`` (YAML configuration), ``health`` (down-marking and probing).
"""

from .config import ClusterConfig, ShardConfig, load_config, parse_config
from .errors import (
    BadFormat,
    Buried,
    CommandError,
    ConfigError,
    DeadlineSoon,
    Draining,
    ExpectedCrlf,
    InternalError,
    InvalidArgument,
    JobIdError,
    JobTooBig,
    NotFound,
    NotIgnored,
    OutOfMemory,
    PutUncertain,
    ReservationLost,
    RouterError,
    ShardUnavailable,
    UnexpectedReply,
    UnknownCommand,
)
from .job import Job

TYPE_CHECKING = False  # as in beanrouter/__init__.py: type checkers take it as true
if TYPE_CHECKING:
    from .router import DEFAULT_PRIORITY, DEFAULT_TTR, Router
    from .summary import check_config, placement_summary

__all__ = [
    "DEFAULT_PRIORITY",
    "DEFAULT_TTR",
    "BadFormat",
    "Buried",
    "ClusterConfig",
    "CommandError",
    "ConfigError",
    "DeadlineSoon",
    "Draining",
    "ExpectedCrlf",
    "InternalError",
    "InvalidArgument",
    "Job",
    "JobIdError",
    "JobTooBig",
    "NotFound",
    "NotIgnored",
    "OutOfMemory",
    "PutUncertain",
    "ReservationLost",
    "Router",
    "RouterError",
    "ShardConfig",
    "ShardUnavailable",
    "UnexpectedReply",
    "UnknownCommand",
    "check_config",
    "load_config",
    "parse_config",
    "placement_summary",
]

# The blocking client and the summary are loaded on first access: the proxy and ``beanrouter
# cluster`` import this package's other modules (and so this file) and need neither.
_LAZY = {
    "DEFAULT_PRIORITY": ".router",
    "DEFAULT_TTR": ".router",
    "Router": ".router",
    "check_config": ".summary",
    "placement_summary": ".summary",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
