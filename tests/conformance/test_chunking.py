"""Chunking must not change replies: cases run again with all their input sent up front in one
write (pipelined) and with every byte in its own write (bytewise).

The expected transcript is the real beanstalkd's step-by-step one. All single-connection cases
that run on the shared server are included; of those needing a fresh server (a server start
each), a selection that exercises the parser's states: bodies, discarded bodies, EXPECTED_CRLF,
bodies read as commands.
"""

from __future__ import annotations

import pytest

from . import test_jobs, test_lines, test_put, test_reserve, test_stats, test_tubes
from .harness import Case, Conformance

FRESH = {
    "put-basic",
    "put-empty-body",
    "put-body-with-crlf",
    "put-body-binary",
    "put-body-looks-like-commands",
    "put-pipelined",
    "put-leading-spaces-and-zeros",
    "job-too-big-discards-body",
    "job-too-big-with-trailing-garbage",
    "job-too-big-discards-exactly-n-plus-2",
    "job-too-big-body-containing-commands",
    "z-0-allows-only-empty-bodies",
    "expected-crlf-uses-up-an-id",
    "expected-crlf-then-next-line",
    "expected-crlf-body-longer-than-declared",
    "expected-crlf-leftover-newline-joins-next-line",
    "expected-crlf-body-shorter-than-declared",
    "put-trailing-space",
    "put-trailing-letter",
    "put-bad-format-body-is-a-command",
    "put-cmd-put-counter",
    "watch-list-order-after-ignore",
    "bury-fifo-and-kick",
    "stats-bad-format-does-not-count",
}

ALL = [
    c
    for module in (test_lines, test_put, test_tubes, test_jobs, test_reserve, test_stats)
    for c in module.CASES
]
_NAMES = [c.name for c in ALL]
_UNKNOWN = FRESH - set(_NAMES)
assert not _UNKNOWN, f"no such cases: {_UNKNOWN}"
assert len(_NAMES) == len(set(_NAMES)), "case names must be unique across modules"
PIPELINED = [c for c in ALL if c.pipelinable and (c.shared or c.name in FRESH)]
# Every byte in its own segment is slow for big bodies; small inputs cover the parser.
BYTEWISE = [c for c in PIPELINED if sum(len(s.data) for s in c.steps) <= 600]


@pytest.mark.parametrize("c", PIPELINED, ids=lambda c: c.name)
def test_pipelined(conformance: Conformance, c: Case) -> None:
    conformance.check(c, "pipelined")


@pytest.mark.parametrize("c", BYTEWISE, ids=lambda c: c.name)
def test_bytewise(conformance: Conformance, c: Case) -> None:
    conformance.check(c, "bytewise")
