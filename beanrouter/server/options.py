"""beanstalkd's command line, reproduced so ``beanrouter server`` is a drop-in for it.

Flags (as in beanstalkd 1.12): ``-b DIR -f MS -F -l ADDR -p PORT -u USER -z BYTES -s BYTES -v -V
-h``. Flags may be grouped (``-VV``) and take their argument attached (``-p11300``) or as the next
word. Errors print beanstalkd's usage text to stderr and exit 5; messages and exit statuses are
beanstalkd's (tests/cli compares them with /usr/bin/beanstalkd). Differences: the default address
is 127.0.0.1, not 0.0.0.0 (pass ``-l 0.0.0.0`` to listen everywhere); one long option of our own,
``--salvage``, starts from a binlog with damage other than a torn tail (docs/server.md).
Pure: parsing returns a ``ServerOptions`` or raises ``UsageExit``; printing is the caller's job.
"""

from __future__ import annotations

# Not imported from beanrouter.protocol on purpose: this module is on the start-up path, which
# binds the listening socket before anything heavy is imported (tests check they agree).
DEFAULT_MAX_JOB_SIZE = 65535
MAX_JOB_SIZE_LIMIT = 1_073_741_824
VERSION = "1.12"
"""The beanstalkd version this server reproduces (reported by ``-v`` and ``stats``)."""

DEFAULT_FSYNC_MS = 50
DEFAULT_FILE_SIZE = 10 * 1024 * 1024
DEFAULT_ADDR = "127.0.0.1"
DEFAULT_PORT = 11300


class ServerOptions:
    """What the command line asked for. (A plain class: ``dataclasses`` costs start-up time.)"""

    __slots__ = (
        "addr",
        "binlog_dir",
        "binlog_file_size",
        "fsync_ms",
        "max_job_size",
        "port",
        "salvage",
        "user",
        "verbose",
        "warnings",
    )

    def __init__(self) -> None:
        self.addr: str = DEFAULT_ADDR
        self.port: int | str = DEFAULT_PORT
        """An int for a plain port number; else the text given, which goes to getaddrinfo as
        beanstalkd hands it (a service name such as ``http`` works, junk fails at bind)."""
        self.max_job_size: int = DEFAULT_MAX_JOB_SIZE
        self.binlog_dir: str | None = None
        self.fsync_ms: int | None = DEFAULT_FSYNC_MS
        """Milliseconds between fsyncs; None with ``-F`` (never fsync)."""
        self.binlog_file_size: int = DEFAULT_FILE_SIZE
        self.user: str | None = None
        self.salvage: bool = False
        """``--salvage``: skip damaged binlog records instead of refusing to start."""
        self.verbose: int = 0
        self.warnings: tuple[str, ...] = ()


class UsageExit(Exception):
    """Parsing ended: print ``stdout``/``stderr`` and exit with ``code``."""

    def __init__(self, code: int, stdout: str = "", stderr: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.stdout = stdout
        self.stderr = stderr


def usage_text(progname: str) -> str:
    return (
        f"Use: {progname} [OPTIONS]\n"
        "\n"
        "Options:\n"
        " -b DIR   write-ahead log directory\n"
        f" -f MS    fsync at most once every MS milliseconds (default is {DEFAULT_FSYNC_MS}ms);\n"
        '          use -f0 for "always fsync"\n'
        " -F       never fsync\n"
        f" -l ADDR  listen on address (default is {DEFAULT_ADDR}); unix:PATH for a UNIX socket\n"
        f" -p PORT  listen on port (default is {DEFAULT_PORT})\n"
        " -u USER  become user and group\n"
        f" -z BYTES set the maximum job size in bytes (default is {DEFAULT_MAX_JOB_SIZE});\n"
        f"          max allowed is {MAX_JOB_SIZE_LIMIT} bytes\n"
        f" -s BYTES set the size of each write-ahead log file (default is {DEFAULT_FILE_SIZE});\n"
        "          will be rounded up to a multiple of 4096 bytes\n"
        " -v       show version information\n"
        " -V       increase verbosity\n"
        " -h       show this help\n"
        " --salvage  start from a damaged binlog, skipping what cannot be read\n"
    )


def _size(progname: str, text: str, warnings: list[str]) -> int:
    # sscanf("%zu%c") accepts leading white space and a sign; we accept plain digits, which is
    # what every real invocation uses, and reject the rest with beanstalkd's message.
    stripped = text.strip()
    if not stripped.isdigit():
        raise UsageExit(5, stderr=_warn(progname, warnings, f"invalid size: {text}"))
    return int(stripped)


def _lines(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _warn(progname: str, warnings: list[str], message: str) -> str:
    lines = [*warnings, f"{progname}: {message}"]
    return "\n".join(lines) + "\n" + usage_text(progname)


def parse_args(argv: list[str], progname: str = "beanstalkd") -> ServerOptions:
    """Parse beanstalkd-style flags (``argv`` excludes the program name)."""
    opts = ServerOptions()
    warnings: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if word == "--salvage":
            opts.salvage = True
            continue
        if not word.startswith("-") or word == "-":
            raise UsageExit(5, stderr=_warn(progname, warnings, f"unknown argument: {word}"))
        flags = word[1:]
        j = 0
        while j < len(flags):
            flag = flags[j]
            j += 1
            if flag in "plzsfub":
                if j < len(flags):
                    value = flags[j:]
                    j = len(flags)
                elif i < len(args):
                    value = args[i]
                    i += 1
                else:
                    message = f"flag requires an argument: -{flag}"
                    raise UsageExit(5, stderr=_warn(progname, warnings, message))
                if flag == "p":
                    opts.port = int(value) if value.isdigit() and int(value) <= 65535 else value
                elif flag == "l":
                    opts.addr = value
                elif flag == "z":
                    size = _size(progname, value, warnings)
                    if size > MAX_JOB_SIZE_LIMIT:
                        warnings.append(
                            f"{progname}: maximum job size was set to {MAX_JOB_SIZE_LIMIT}"
                        )
                        size = MAX_JOB_SIZE_LIMIT
                    opts.max_job_size = size
                elif flag == "s":
                    opts.binlog_file_size = _size(progname, value, warnings)
                elif flag == "f":
                    opts.fsync_ms = _size(progname, value, warnings)
                elif flag == "u":
                    opts.user = value
                else:
                    opts.binlog_dir = value
            elif flag == "F":
                opts.fsync_ms = None
            elif flag == "V":
                opts.verbose += 1
            elif flag == "v":
                raise UsageExit(0, stdout=f"beanstalkd {VERSION}\n", stderr=_lines(warnings))
            elif flag == "h":
                raise UsageExit(0, stderr="\n".join([*warnings, usage_text(progname)]).lstrip())
            elif flag in "cn":
                warnings.append(
                    f"{progname}: -{flag} flag was removed. binlog is always compacted."
                )
            else:
                # beanstalkd names the word from just before the bad letter: -x, --help, Vx
                message = f"unknown flag: {word[j - 1 :]}"
                raise UsageExit(5, stderr=_warn(progname, warnings, message))
    opts.warnings = tuple(warnings)
    return opts
