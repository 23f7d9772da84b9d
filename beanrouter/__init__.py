"""beanrouter: make a set of independent beanstalkd servers behave like one big beanstalkd.

The package exports a fixed list of names (``__all__``): the router library's client classes, its
exceptions and configuration helpers. Kept import-light: ``beanrouter server`` must be listening
fast, so importing ``beanrouter`` (or any ``beanrouter.server`` module) imports none of them; each
is loaded from the module named in ``_EXPORTS`` on first access (``from beanrouter import Router``
imports ``beanrouter.router`` then).

Layers (docs/architecture.md): protocol < core < drivers < shells (``router``, ``proxy``,
``server``) < processes < cli; ``make lint`` checks that no module imports a higher layer. This
module is at the shells' level: it names only ``beanrouter.router`` (lazily).
"""

# The usual ``from typing import TYPE_CHECKING`` without importing ``typing``: type checkers treat
# a name spelt TYPE_CHECKING as true. Deleted below, so it is not one of the package's names.
TYPE_CHECKING = False

# The one place the version is written: pyproject.toml reads it ([tool.setuptools.dynamic]).
__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PRIORITY",
    "DEFAULT_TTR",
    "AsyncJob",
    "AsyncRouter",
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

# Public name -> module that defines it. Static, so that a lookup imports only the module of the
# name asked for. tests/unit/test_package.py keeps it equal to the router's ``__all__`` plus the
# asyncio names, and to the TYPE_CHECKING imports below.
_EXPORTS = dict.fromkeys(__all__, "beanrouter.router")
_EXPORTS["AsyncRouter"] = _EXPORTS["AsyncJob"] = "beanrouter.router.aio"

if TYPE_CHECKING:
    # What type checkers see (they do not run __getattr__): the same names, statically. Names
    # listed in ``__all__`` are re-exported.
    from .router import (
        DEFAULT_PRIORITY,
        DEFAULT_TTR,
        BadFormat,
        Buried,
        ClusterConfig,
        CommandError,
        ConfigError,
        DeadlineSoon,
        Draining,
        ExpectedCrlf,
        InternalError,
        InvalidArgument,
        Job,
        JobIdError,
        JobTooBig,
        NotFound,
        NotIgnored,
        OutOfMemory,
        PutUncertain,
        ReservationLost,
        Router,
        RouterError,
        ShardConfig,
        ShardUnavailable,
        UnexpectedReply,
        UnknownCommand,
        check_config,
        load_config,
        parse_config,
        placement_summary,
    )
    from .router.aio import AsyncJob, AsyncRouter
else:
    # Hidden from type checkers, so that a misspelt name is an error for them rather than Any.

    def __getattr__(name):
        """Load an exported name from its module on first access (then it is a plain global)."""
        module = _EXPORTS.get(name)
        if module is None:
            # Any other name is absent. This matters beyond typos: ``from beanrouter import
            # protocol`` (what ``from .. import protocol`` in a submodule does) first probes this
            # attribute, and must get AttributeError so that the submodule is imported instead.
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from importlib import import_module

        try:
            value = getattr(import_module(module), name)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            # The defining module is not there (beanrouter.router.aio while it is being
            # written): the name is absent, and hasattr() says False rather than raising.
            raise AttributeError(f"module {__name__!r} has no attribute {name!r} ({exc})") from exc
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    """The exported names, ``__version__`` and the module's own dunders; nothing else."""
    own = [n for n in globals() if n.startswith("__") and n not in ("__getattr__", "__dir__")]
    return sorted({*__all__, *own})


del TYPE_CHECKING
