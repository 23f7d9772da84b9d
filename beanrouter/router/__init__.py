"""The router library's shells: many independent beanstalkd shards used like one beanstalkd.

Owns ``Router`` (the blocking client, ``router.py``) and ``AsyncRouter`` (``aio.py``), what they
share (``facade.py``, ``job.py``, ``timers.py``), their drivers (``driver.py`` and
``connection.py`` over blocking sockets, ``aio_driver.py`` over asyncio streams), reading a
configuration (``config.py``: YAML → ``core.config.ClusterConfig``), ``check-config``
(``summary.py``) and the shell of ``beanrouter rebalance`` (``rebalance.py``).

Layers (docs/architecture.md): the drivers import only ``beanrouter.protocol`` and
``beanrouter.core``; the facades import those and the drivers. Nothing here imports
``beanrouter.proxy``, ``beanrouter.server`` or ``beanrouter.cli``.

The names below are the library's public API (re-exported by ``beanrouter``); the exceptions and
``ClusterConfig``/``ShardConfig`` are defined in the core (``core.errors``, ``core.config``).
They are loaded from their modules on first access (PEP 562), so that importing one submodule
(``beanrouter.router.config``) does not import ``Router`` and its driver.
"""

TYPE_CHECKING = False

_EXPORTS = {
    **dict.fromkeys(("ClusterConfig", "ShardConfig"), "beanrouter.core.config"),
    **dict.fromkeys(("load_config", "parse_config"), "beanrouter.router.config"),
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
        "beanrouter.core.errors",
    ),
    "Job": "beanrouter.router.job",
    **dict.fromkeys(("DEFAULT_PRIORITY", "DEFAULT_TTR", "Router"), "beanrouter.router.router"),
    **dict.fromkeys(("check_config", "placement_summary"), "beanrouter.router.summary"),
}

if TYPE_CHECKING:
    from ..core.config import ClusterConfig, ShardConfig
    from ..core.errors import (
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
    from .config import load_config, parse_config
    from .job import Job
    from .router import DEFAULT_PRIORITY, DEFAULT_TTR, Router
    from .summary import check_config, placement_summary


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
