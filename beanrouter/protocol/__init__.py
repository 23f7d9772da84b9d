"""beanrouter's one sans-IO codec for the beanstalkd protocol (standard library only, no I/O).

Server role: ``CommandReader`` turns a client's bytes into command events (``Put``, ``Reserve``…)
or ``Rejected`` input, exactly as beanstalkd 1.12 reads them; replies are encoded with their
``encode()``. Client role: commands are encoded with ``encode()`` and ``ReplyReader`` turns a
server's bytes into reply events. ``format_mapping``/``parse_mapping`` and
``format_list``/``parse_list`` handle the YAML bodies of ``OK`` replies.

Layers (docs/architecture.md): the lowest. Imports the standard library only (no I/O modules, no
PyYAML: the YAML of ``OK`` bodies is beanstalkd's own small dialect, read here) and no other
beanrouter package.
"""

from ._client import MAX_REPLY_LINE, ReplyReader, encode_command
from ._commands import *  # noqa: F403
from ._commands import __all__ as _commands_all
from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._replies import *  # noqa: F403
from ._replies import __all__ as _replies_all
from ._server import CLOSED, NEED_DATA, CommandReader, Event, PutStarted, Rejected, Sentinel
from ._wire import (
    DEFAULT_MAX_JOB_SIZE,
    LINE_MAX,
    MAX_JOB_SIZE_LIMIT,
    MAX_TUBE_NAME,
    U32_MAX,
    U64_MAX,
    URGENT_THRESHOLD,
    is_valid_tube_name,
)
from ._yaml import StatValue, format_list, format_mapping, parse_list, parse_mapping

__all__ = [
    *_commands_all,
    *_replies_all,
    "CLOSED",
    "DEFAULT_MAX_JOB_SIZE",
    "LINE_MAX",
    "MAX_JOB_SIZE_LIMIT",
    "MAX_REPLY_LINE",
    "MAX_TUBE_NAME",
    "NEED_DATA",
    "U32_MAX",
    "U64_MAX",
    "URGENT_THRESHOLD",
    "CommandReader",
    "Event",
    "LocalProtocolError",
    "ProtocolError",
    "PutStarted",
    "Rejected",
    "RemoteProtocolError",
    "ReplyReader",
    "Sentinel",
    "StatValue",
    "encode_command",
    "format_list",
    "format_mapping",
    "is_valid_tube_name",
    "parse_list",
    "parse_mapping",
]
