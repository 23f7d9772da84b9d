"""The router library: many independent beanstalkd shards used like one beanstalkd.

``Router`` (the client), ``Job``, the exceptions, and the pure cores: ``ring`` (placement),
``ids`` (global job ids), ``config`` (YAML configuration), ``health`` (down-marking and probing).

The names below are loaded from their modules on first access (PEP 562): the routing core
imports the pure modules of this package (``ids``, ``ring``, ``health``, ``errors``, ``config``,
``merge``), and importing them must not import ``Router`` and its drivers, which import the core
back (an import cycle that a compiled build cannot load).
"""

TYPE_CHECKING = False

_EXPORTS = {
    **dict.fromkeys(("ClusterConfig", "ShardConfig", "load_config", "parse_config"), "config"),
    **dict.fromkeys(
        (
            "BadFormat",
            "Buried",
            "CommandError",
            "ConfigError",
            "DeadlineSoon",
            "Draining",
            "ExpectedCrlf",
            "InternalError",
            "InvalidArgument",
            "JobIdError",
            "JobTooBig",
            "NotFound",
            "NotIgnored",
            "OutOfMemory",
            "PutUncertain",
            "ReservationLost",
            "RouterError",
            "ShardUnavailable",
            "UnexpectedReply",
            "UnknownCommand",
        ),
        "errors",
    ),
    "Job": "job",
    **dict.fromkeys(("DEFAULT_PRIORITY", "DEFAULT_TTR", "Router"), "router"),
    **dict.fromkeys(("check_config", "placement_summary"), "summary"),
}

if TYPE_CHECKING:
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
    from .router import DEFAULT_PRIORITY, DEFAULT_TTR, Router
    from .summary import check_config, placement_summary


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


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
