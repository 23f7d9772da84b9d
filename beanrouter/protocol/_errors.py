"""Protocol errors.

``LocalProtocolError``: *we* tried to build or send something the protocol forbids (a bad tube
name, a priority out of range). ``RemoteProtocolError``: the *peer* sent bytes we cannot parse
(used by the client role: a server reply we do not understand). Server-side bad input is not an
exception: beanstalkd answers it and keeps the connection, so the server reader yields a
``Rejected`` event instead.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of the codec's errors."""


class LocalProtocolError(ProtocolError, ValueError):
    """An event built or sent locally breaks the protocol's rules."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that is not valid beanstalkd protocol."""
