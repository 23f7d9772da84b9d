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
