"""Tubes: use/watch/ignore, list-*, name validation, lifetime and order, pause-tube."""

from __future__ import annotations

import pytest

from .harness import (
    BAD_FORMAT,
    NOT_FOUND,
    NOT_IGNORED,
    PAUSED,
    TIMED_OUT,
    USING_DEFAULT,
    Case,
    Conformance,
    case,
    found,
    hangup,
    inserted,
    io,
    list_reply,
    put,
    reserved,
    stats_reply,
    tube_reply,
)

LTU = b"list-tube-used\r\n"
NAME_200 = b"n" * 200
NAME_201 = b"n" * 201
ALL_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()"


def using(name: bytes) -> bytes:
    return b"USING " + name + b"\r\n"


def watching(n: int) -> bytes:
    return b"WATCHING %d\r\n" % n


def name_case(cmd: bytes, name: bytes, reply: bytes, tag: str) -> Case:
    used = reply if reply.startswith(b"USING ") else USING_DEFAULT
    return case(
        f"{cmd.decode()}-{tag}",
        io(cmd + b" " + name + b"\r\n", reply),
        io(LTU, used),
        shared=True,
    )


def names() -> list[Case]:
    """The same tube-name rules for use, watch, ignore, stats-tube and pause-tube."""
    bad_names = {
        "201-bytes": NAME_201,
        "leading-dash": b"-foo",
        "leading-space": b" foo",
        "trailing-space": b"foo ",
        "inner-space": b"foo bar",
        "empty": b"",
        "bang": b"foo!",
        "star": b"*",
        "colon": b"a:b",
        "at": b"a@b",
        "comma": b"a,b",
        "quote": b'a"b',
        "backslash": b"a\\b",
        "tab": b"a\tb",
        "utf8": "f\u00f6o".encode(),
        "high-byte": b"a\xffb",
    }
    out = []
    for cmd in (b"use", b"watch", b"ignore", b"stats-tube"):
        for tag, name in bad_names.items():
            out.append(name_case(cmd, name, BAD_FORMAT, tag))
    out += [
        name_case(b"use", NAME_200, using(NAME_200), "200-bytes"),
        name_case(b"use", ALL_CHARS, using(ALL_CHARS), "all-allowed-chars"),
        name_case(b"use", b"foo-", using(b"foo-"), "trailing-dash"),
        name_case(b"use", b"(", using(b"("), "one-char"),
        name_case(b"watch", NAME_200, watching(2), "200-bytes"),
        name_case(b"watch", ALL_CHARS, watching(2), "all-allowed-chars"),
        name_case(b"watch", b"default", watching(1), "default-again"),
        name_case(b"ignore", NAME_200, watching(1), "200-bytes-unwatched"),
        name_case(b"ignore", b"no-such-tube", watching(1), "unwatched"),
        name_case(b"ignore", b"default", NOT_IGNORED, "last-watched"),
        name_case(b"stats-tube", NAME_200, NOT_FOUND, "200-bytes-missing"),
        name_case(b"stats-tube", b"no-such-tube", NOT_FOUND, "missing"),
    ]
    return out


# pause-tube reads "<name> <delay>" itself: the name is a run of name characters after any
# spaces (no space after "pause-tube" is needed), then a u32 that must end the line.
PAUSE_PARSING = [
    case("pause-tube-missing", io(b"pause-tube no-such-tube 1\r\n", NOT_FOUND), shared=True),
    case("pause-tube-no-space", io(b"pause-tubeno-such-tube 1\r\n", NOT_FOUND), shared=True),
    case("pause-tube-spaces", io(b"pause-tube  no-such-tube  1\r\n", NOT_FOUND), shared=True),
    case("pause-tube-no-delay", io(b"pause-tube no-such-tube\r\n", BAD_FORMAT), shared=True),
    case("pause-tube-letters", io(b"pause-tube no-such-tube x\r\n", BAD_FORMAT), shared=True),
    case("pause-tube-minus", io(b"pause-tube no-such-tube -1\r\n", BAD_FORMAT), shared=True),
    case(
        "pause-tube-overflow",
        io(b"pause-tube no-such-tube 4294967296\r\n", BAD_FORMAT),
        shared=True,
    ),
    case(
        "pause-tube-trailing-space",
        io(b"pause-tube no-such-tube 1 \r\n", BAD_FORMAT),
        shared=True,
    ),
    case("pause-tube-bad-char", io(b"pause-tube foo!bar 1\r\n", BAD_FORMAT), shared=True),
    case("pause-tube-tab", io(b"pause-tube\tdefault 1\r\n", BAD_FORMAT), shared=True),
    case("pause-tube-leading-dash", io(b"pause-tube -foo 1\r\n", BAD_FORMAT), shared=True),
    case("pause-tube-201", io(b"pause-tube " + NAME_201 + b" 1\r\n", BAD_FORMAT), shared=True),
    case(
        "pause-tube-200-missing", io(b"pause-tube " + NAME_200 + b" 1\r\n", NOT_FOUND), shared=True
    ),
]

WATCHING = [
    case(
        "watch-twice",
        io(b"watch foo\r\n", watching(2)),
        io(b"watch foo\r\n", watching(2)),
        io(b"list-tubes-watched\r\n", list_reply("default", "foo")),
        io(b"stats-tube foo\r\n", tube_reply("foo", current_watching=1)),
    ),
    case(
        "ignore-flow",
        io(put(b"in-default"), inserted(1)),
        io(b"watch foo\r\n", watching(2)),
        io(b"ignore default\r\n", watching(1)),
        io(b"list-tubes-watched\r\n", list_reply("foo")),
        io(b"ignore foo\r\n", NOT_IGNORED),
        io(b"ignore bar\r\n", watching(1)),
        io(b"ignore default\r\n", watching(1)),
        io(b"reserve-with-timeout 0\r\n", TIMED_OUT),
        io(b"watch default\r\n", watching(2)),
        io(b"list-tubes-watched\r\n", list_reply("foo", "default")),
        io(b"reserve-with-timeout 0\r\n", reserved(1, b"in-default")),
    ),
    # The watch list is an unordered set in beanstalkd: removing an entry moves the last one
    # into its place.
    case(
        "watch-list-order-after-ignore",
        io(b"watch a\r\nwatch b\r\nwatch c\r\n", watching(2), watching(3), watching(4)),
        io(b"list-tubes-watched\r\n", list_reply("default", "a", "b", "c")),
        io(b"ignore a\r\n", watching(3)),
        io(b"list-tubes-watched\r\n", list_reply("default", "c", "b")),
        io(b"ignore default\r\n", watching(2)),
        io(b"list-tubes-watched\r\n", list_reply("b", "c")),
        io(b"watch a\r\n", watching(3)),
        io(b"list-tubes-watched\r\n", list_reply("b", "c", "a")),
    ),
    case(
        "use-and-list-tube-used",
        io(b"use foo\r\n", using(b"foo")),
        io(LTU, using(b"foo")),
        io(b"use foo\r\n", using(b"foo")),
        io(b"use default\r\n", USING_DEFAULT),
        io(LTU, USING_DEFAULT),
    ),
]

LIFETIME = [
    case("list-tubes-fresh", io(b"list-tubes\r\n", b"OK 14\r\n---\n- default\n\r\n")),
    case(
        "list-tubes-order-after-removal",
        io(b"watch a\r\nwatch b\r\nwatch c\r\n", watching(2), watching(3), watching(4)),
        io(b"list-tubes\r\n", list_reply("default", "a", "b", "c")),
        io(b"ignore a\r\n", watching(3)),
        io(b"list-tubes\r\n", list_reply("default", "c", "b")),
        io(b"watch a\r\n", watching(4)),
        io(b"list-tubes\r\n", list_reply("default", "c", "b", "a")),
        io(b"ignore c\r\n", watching(3)),
        io(b"list-tubes\r\n", list_reply("default", "a", "b")),
    ),
    case(
        "tube-lives-while-used",
        io(b"use foo\r\n", using(b"foo")),
        io(b"list-tubes\r\n", list_reply("default", "foo")),
        io(b"use default\r\n", USING_DEFAULT),
        io(b"list-tubes\r\n", list_reply("default")),
        io(b"stats-tube foo\r\n", NOT_FOUND),
    ),
    case(
        "tube-lives-while-it-has-jobs",
        io(b"use foo\r\n", using(b"foo")),
        io(put(b"x"), inserted(1)),
        io(b"use default\r\n", USING_DEFAULT),
        io(b"list-tubes\r\n", list_reply("default", "foo")),
        io(b"watch foo\r\n", watching(2)),
        io(b"reserve\r\n", reserved(1, b"x")),
        io(b"ignore foo\r\n", watching(1)),
        # a reserved job keeps its tube
        io(b"list-tubes\r\n", list_reply("default", "foo")),
        io(b"bury 1 5\r\n", b"BURIED\r\n"),
        io(b"list-tubes\r\n", list_reply("default", "foo")),
        io(b"delete 1\r\n", b"DELETED\r\n"),
        io(b"list-tubes\r\n", list_reply("default")),
    ),
    case(
        "tube-lives-while-delayed-job",
        io(b"use foo\r\n", using(b"foo")),
        io(put(b"x", delay=100), inserted(1)),
        io(b"use default\r\n", USING_DEFAULT),
        io(b"list-tubes\r\n", list_reply("default", "foo")),
        io(b"delete 1\r\n", b"DELETED\r\n"),
        io(b"list-tubes\r\n", list_reply("default")),
    ),
    case(
        "tube-lives-while-another-connection-uses-it",
        io(b"use foo\r\n", using(b"foo"), conn="b"),
        io(b"watch bar\r\n", watching(2), conn="c"),
        io(b"list-tubes\r\n", list_reply("default", "foo", "bar")),
        io(
            b"stats-tube foo\r\n",
            tube_reply("foo", current_using=1),
        ),
        hangup("b"),
        io(b"list-tubes\r\n", list_reply("default", "bar")),
        hangup("c"),
        io(b"list-tubes\r\n", list_reply("default")),
    ),
    case(
        "default-tube-always-exists",
        io(b"use foo\r\nwatch foo\r\nignore default\r\n", using(b"foo"), watching(2), watching(1)),
        io(b"list-tubes\r\n", list_reply("default", "foo")),
        io(b"stats-tube default\r\n", tube_reply()),
    ),
    case(
        "stats-tube-counts-users-and-watchers",
        io(b"use foo\r\n", using(b"foo"), conn="b"),
        io(b"watch foo\r\n", watching(2), conn="c"),
        io(b"watch foo\r\nuse foo\r\n", watching(2), using(b"foo"), conn="d"),
        io(
            b"stats-tube foo\r\n",
            tube_reply("foo", current_using=2, current_watching=2),
        ),
        io(
            b"stats-tube default\r\n",
            tube_reply(current_using=2, current_watching=4),
        ),
    ),
]

PAUSE = [
    case(
        "pause-tube-stats",
        io(b"pause-tube default 10\r\n", PAUSED),
        io(
            b"stats-tube default\r\n",
            tube_reply(
                current_using=1,
                current_watching=1,
                cmd_pause_tube=1,
                pause=10,
                pause_time_left=9,
            ),
        ),
        # delay 0 is stored as 1 ns: the tube unpauses at once and shows pause 0
        io(b"pause-tube default 0\r\n", PAUSED),
        io(
            b"stats-tube default\r\n",
            tube_reply(current_using=1, current_watching=1, cmd_pause_tube=2),
        ),
    ),
    case(
        "pause-tube-blocks-reserve-not-peek",
        io(put(b"a"), inserted(1)),
        io(b"pause-tube default 10\r\n", PAUSED),
        io(b"reserve-with-timeout 0\r\n", TIMED_OUT),
        io(b"peek-ready\r\n", found(1, b"a")),
        io(b"pause-tube default 0\r\n", PAUSED),
        io(b"reserve-with-timeout 0\r\n", reserved(1, b"a")),
    ),
    case(
        "pause-tube-reserve-job-ignores-pause",
        io(put(b"a"), inserted(1)),
        io(b"pause-tube default 10\r\n", PAUSED),
        io(b"reserve-job 1\r\n", reserved(1, b"a")),
    ),
    case(
        "pause-tube-other-tube-still-served",
        io(b"use foo\r\n", using(b"foo")),
        io(put(b"foo-job", pri=1), inserted(1)),
        io(b"use default\r\n", USING_DEFAULT),
        io(put(b"default-job", pri=2), inserted(2)),
        io(b"watch foo\r\n", watching(2)),
        io(b"pause-tube foo 10\r\n", PAUSED),
        io(b"reserve-with-timeout 0\r\n", reserved(2, b"default-job")),
        io(b"reserve-with-timeout 0\r\n", TIMED_OUT),
    ),
    # cmd-pause-tube is counted once name and delay parse, before the name is validated.
    case(
        "pause-tube-counter",
        io(b"pause-tube -foo 1\r\n", BAD_FORMAT),  # counted
        io(b"pause-tube " + NAME_201 + b" 1\r\n", BAD_FORMAT),  # counted
        io(b"pause-tube foo!x 1\r\n", BAD_FORMAT),  # not counted
        io(b"pause-tube nope 1\r\n", NOT_FOUND),  # counted
        io(b"pause-tube default 1 \r\n", BAD_FORMAT),  # not counted
        io(b"stats\r\n", stats_reply(cmd_pause_tube=3, cmd_stats=1)),
        io(b"stats-tube default\r\n", tube_reply(current_using=1, current_watching=1)),
    ),
    case(
        "tube-command-counters",
        io(b"use -x\r\n", BAD_FORMAT),
        io(b"use x\r\n", using(b"x")),
        io(b"watch -x\r\n", BAD_FORMAT),
        io(b"watch x\r\n", watching(2)),
        io(b"watch x\r\n", watching(2)),
        io(b"ignore -x\r\n", BAD_FORMAT),
        io(b"ignore y\r\n", watching(2)),
        io(b"ignore x\r\nignore default\r\n", watching(1), NOT_IGNORED),
        io(b"stats-tube -x\r\n", BAD_FORMAT),
        io(b"stats-tube y\r\n", NOT_FOUND),
        io(
            b"list-tubes\r\nlist-tubes-watched\r\n",
            list_reply("default", "x"),
            list_reply("default"),
        ),
        io(b"list-tubes \r\n", BAD_FORMAT),
        io(
            b"stats\r\n",
            stats_reply(
                cmd_use=1,
                cmd_watch=2,
                cmd_ignore=3,
                cmd_stats=1,
                cmd_stats_tube=1,
                cmd_list_tubes=1,
                cmd_list_tubes_watched=1,
                current_tubes=2,
            ),
        ),
    ),
]

CASES = names() + PAUSE_PARSING + WATCHING + LIFETIME + PAUSE


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_tubes(conformance: Conformance, c: Case) -> None:
    conformance.check(c)
