"""What a client of the one big beanstalkd is answered when the cluster fails it (pure).

The proxy speaks beanstalkd's words only, so every routing error becomes one of them
(docs/compatibility.md, "Errors from the cluster"):

* a job id that names no shard (``JobIdError``) and a reservation lost with its shard link
  (``NotFound``: ``ReservationLost`` included) answer ``NOT_FOUND``, as one beanstalkd answers
  for a job it does not have, or that the client no longer holds;
* no shard reachable (``ShardUnavailable``), a put whose fate is unknown (``PutUncertain``) and a
  shard that answers nonsense (``ProtocolError``, ``UnexpectedReply``) answer ``INTERNAL_ERROR``.

The library shells raise these errors instead (their own surface, docs/router.md).
"""

from __future__ import annotations

from ..protocol import INTERNAL_ERROR, NOT_FOUND, ProtocolError, Reply
from .errors import JobIdError, NotFound, RouterError

__all__ = ["answer"]


def answer(result: Reply | RouterError | ProtocolError) -> Reply:
    """The beanstalkd reply for one command's result: itself, or its error's word."""
    if isinstance(result, Reply):
        return result
    if isinstance(result, JobIdError | NotFound):
        return NOT_FOUND
    return INTERNAL_ERROR
