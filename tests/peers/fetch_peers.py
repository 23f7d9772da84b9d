#!/usr/bin/env python3
"""Fetch the pinned test suites of other beanstalkd clients into ``.peers/`` (never committed).

The suites are other projects' code: they are downloaded or extracted here, run by
``test_peer_suites.py``, and never vendored. Sources, in the order they are pinned below:

- a PyPI sdist that ships its tests (pystalk 0.5.1 is the newest that does): fetched with pip from
  the index this machine uses, checked against its sha256. Always available where PyPI is.
- a git repository at a pinned commit (greenstalk 2.1.1, pystalk 0.9.1: their sdists and wheels
  ship no tests; beanstalkc 0.4.0, whose sdist pip cannot even download on Python 3: its
  ``setup.py`` imports the Python 2 module). Read from a local clone or snapshot when one has
  the commit: under the directories named by ``$BEANROUTER_PEER_GIT_DIRS``
  (``os.pathsep``-separated; default ``/work/.mirror``) as ``OWNER+NAME/repo``, ``OWNER+NAME``,
  ``NAME.git`` or ``NAME``, or the copy an earlier run cloned into ``.peers/_git/OWNER+NAME``.
  Otherwise the pinned commit is fetched from the public repository,
  ``$BEANROUTER_PEERS_URL/OWNER/NAME`` (default ``https://github.com``): shallow, by commit id,
  or a whole clone where the server refuses that; never prompting for credentials, after a
  ``git ls-remote`` that gives up on an unreachable host within ``GIT_PROBE_TIMEOUT`` seconds
  (so a machine without a network loses no time), each fetch given up on after ``GIT_TIMEOUT``
  seconds or a minute's stall. Where neither works (no network, say) the suite is marked
  unavailable and its tests are skipped.

Each suite's client library (and what its tests import beyond the standard library) is installed
with ``pip install --no-deps --target .peers/SUITE/site`` at pinned versions, so the suites test
the client release they were written for, not whatever our venv has.

Layout: ``.peers/SUITE/`` is the suite's root (its ``tests/``; ``site/``; ``.complete``, the
provenance stamp that makes re-runs no-ops); ``.peers/SUITE.unavailable`` holds the reason a suite
could not be fetched. This script never fails the build: missing suites are reported by the tests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DEST = REPO_ROOT / ".peers"
DEFAULT_GIT_DIRS = "/work/.mirror"
DEFAULT_GIT_URL = "https://github.com"
GIT_TIMEOUT = 300.0
GIT_PROBE_TIMEOUT = 60.0
STAMP = ".complete"


@dataclass(frozen=True)
class SdistSource:
    """A PyPI sdist whose archive contains the suite (extracted without its top directory)."""

    project: str
    version: str
    sha256: str


@dataclass(frozen=True)
class GitSource:
    """Paths of a git repository at a pinned commit."""

    repo: str  # OWNER/NAME
    commit: str
    tag: str
    paths: tuple[str, ...]


@dataclass(frozen=True)
class PeerSuite:
    """One client's test suite, pinned, and what it takes to pass it."""

    name: str  # directory under .peers/
    source: SdistSource | GitSource
    requirements: tuple[str, ...]  # installed --no-deps into site/
    test_paths: tuple[str, ...]  # relative to the suite root
    expected_passed: int  # all of them, against the real beanstalkd 1.12
    uses_binlog: bool  # spawns the server with -b DIR
    runner: str | None = None  # our test module that runs the suite, relative to tests/peers

    @property
    def required(self) -> bool:
        """Whether CI can always get it (PyPI), so that its absence is a failure, not a skip."""
        return isinstance(self.source, SdistSource)

    def key(self) -> str:
        """What the stamp records: a change to the pin refetches the suite."""
        return json.dumps(asdict(self), sort_keys=True)


SUITES: tuple[PeerSuite, ...] = (
    PeerSuite(
        name="greenstalk-2.1.1",
        source=GitSource(
            repo="justinmayhew/greenstalk",
            commit="4911ed3655bf8bd6eaf8b7a8aa9dba2f8cf3030d",
            tag="v2.1.1",
            paths=("tests",),
        ),
        requirements=("greenstalk==2.1.1",),
        test_paths=("tests",),
        expected_passed=44,
        uses_binlog=False,
    ),
    PeerSuite(
        name="pystalk-0.9.1",
        source=GitSource(
            repo="EasyPost/pystalk",
            commit="d42cdff7b9469d6030b36a4930a8e59a45fc5999",
            tag="pystalk-0.9.1",
            paths=("tests",),
        ),
        requirements=("pystalk==0.9.1", "attrs==26.1.0", "pytest-mock==3.17.0"),
        test_paths=("tests",),
        expected_passed=49,
        uses_binlog=True,
    ),
    PeerSuite(
        name="pystalk-0.5.1-sdist",
        source=SdistSource(
            project="pystalk",
            version="0.5.1",
            sha256="16133a39f4be69f59961397e35c8c8e6d99f8813dda8c90696e2ac0647f2a86e",
        ),
        requirements=("six==1.17.0", "attrs==26.1.0", "mock==5.2.0"),
        test_paths=("tests",),
        expected_passed=30,
        uses_binlog=True,
    ),
    PeerSuite(
        name="beanstalkc-0.4.0",
        source=GitSource(
            repo="earl/beanstalkc",
            commit="c905774b66120879b7e5cbf11c7518e784d15975",
            tag="v0.4.0",
            paths=("beanstalkc.py", "README.mkd", "TUTORIAL.mkd", "test"),
        ),
        requirements=("PyYAML==6.0.4",),
        test_paths=(),
        expected_passed=3,  # one per doctest file: 6 + 87 + 16 examples
        uses_binlog=False,
        runner="shim/beanstalkc_doctests.py",  # Python 2 doctests, shimmed at run time
    ),
)


class Unavailable(Exception):
    """The suite's source cannot be had on this machine; the message says why."""


def peers_dir() -> Path:
    """Where the suites live: ``$BEANROUTER_PEERS_DIR`` or ``.peers/`` at the repository root."""
    return Path(os.environ.get("BEANROUTER_PEERS_DIR", DEFAULT_DEST))


def suite_root(suite: PeerSuite, dest: Path | None = None) -> Path:
    """The directory holding ``suite`` (it exists only once the fetch completed)."""
    return (dest or peers_dir()) / suite.name


def is_fetched(suite: PeerSuite, dest: Path | None = None) -> bool:
    """Whether ``suite`` is on disk at its current pin."""
    stamp = suite_root(suite, dest) / STAMP
    try:
        return bool(json.loads(stamp.read_text())["key"] == suite.key())
    except (OSError, ValueError, KeyError):
        return False


def unavailable_reason(suite: PeerSuite, dest: Path | None = None) -> str | None:
    """Why the last fetch of ``suite`` failed, if it did."""
    try:
        return (dest or peers_dir()).joinpath(f"{suite.name}.unavailable").read_text().strip()
    except OSError:
        return None


def _extract(stream: IO[bytes], into: Path, strip_top: bool) -> None:
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            if strip_top:
                parts = Path(member.name).parts[1:]
                if not parts:
                    continue
                member.name = str(Path(*parts))
            tar.extract(member, into, filter="data")


def _fetch_sdist(src: SdistSource, work: Path, downloads: Path) -> str:
    downloads.mkdir(parents=True, exist_ok=True)
    name = f"{src.project}-{src.version}.tar.gz"
    archive = downloads / name
    if not archive.exists():
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-input", "--no-deps"]
        cmd += ["--no-binary", ":all:", "--disable-pip-version-check", "-d", str(downloads)]
        cmd.append(f"{src.project}=={src.version}")
        done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0 or not archive.exists():
            raise Unavailable(
                f"pip download {src.project}=={src.version} failed: {done.stderr[-800:]}"
            )
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != src.sha256:
        archive.unlink()
        raise Unavailable(f"{name}: sha256 {digest} is not the pinned {src.sha256}")
    with archive.open("rb") as f:
        _extract(f, work, strip_top=True)
    return f"PyPI sdist {name} (sha256 {digest})"


def _git_candidates(src: GitSource) -> list[Path]:
    owner, name = src.repo.split("/")
    roots = os.environ.get("BEANROUTER_PEER_GIT_DIRS", DEFAULT_GIT_DIRS).split(os.pathsep)
    found: list[Path] = []
    for root in filter(None, roots):
        base = Path(root).expanduser()
        for rel in (f"{owner}+{name}/repo", f"{owner}+{name}", f"{name}.git", name):
            if (base / rel).is_dir():
                found.append(base / rel)
    return found


def git_url(src: GitSource) -> str:
    """The public repository of ``src``: ``$BEANROUTER_PEERS_URL/OWNER/NAME``."""
    base = os.environ.get("BEANROUTER_PEERS_URL") or DEFAULT_GIT_URL
    return f"{base.rstrip('/')}/{src.repo}"


def _git(*args: str, timeout: float = GIT_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run git without a terminal prompt (credentials, host keys): it fails instead; an HTTP
    transfer slower than 1 KB/s for a minute is abandoned."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
    env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes -o ConnectTimeout=30"
    quiet = ["-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=60"]
    try:
        return subprocess.run(
            ["git", *quiet, *args],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(["git", *args], 124, "", f"timed out after {timeout} s")


def _has_commit(repo: Path, commit: str) -> bool:
    return _git("-C", str(repo), "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0


def _clone(src: GitSource, into: Path) -> None:
    """Fetch ``src.commit`` from ``git_url(src)`` into a bare repository ``into``; raises
    ``Unavailable`` with git's words."""
    url = git_url(src)
    probe = _git("ls-remote", "--heads", url, timeout=GIT_PROBE_TIMEOUT)
    if probe.returncode != 0:
        why = probe.stderr.strip()[-400:] or f"git ls-remote exited {probe.returncode}"
        raise Unavailable(f"cannot fetch {src.commit} from {url}: {why}")
    shutil.rmtree(into, ignore_errors=True)
    into.parent.mkdir(parents=True, exist_ok=True)
    init = _git("init", "--quiet", "--bare", str(into))
    if init.returncode != 0:
        raise Unavailable(f"git init {into} failed: {init.stderr.strip()[-400:]}")
    # The commit alone first (servers that allow fetching a commit by id: GitHub does), then
    # every branch and tag (any server), in which the pinned commit must be.
    shallow = _git("-C", str(into), "fetch", "--quiet", "--depth", "1", url, src.commit)
    if shallow.returncode == 0 and _has_commit(into, src.commit):
        return
    full = _git("-C", str(into), "fetch", "--quiet", "--tags", url, "+refs/heads/*:refs/heads/*")
    if full.returncode == 0 and _has_commit(into, src.commit):
        return
    shutil.rmtree(into, ignore_errors=True)
    why = (full.stderr or shallow.stderr).strip()[-400:] or f"commit {src.commit} is not there"
    raise Unavailable(f"cannot fetch {src.commit} from {url}: {why}")


def _archive(repo: Path, src: GitSource, work: Path) -> None:
    cmd = ["git", "-C", str(repo), "archive", "--format=tar", src.commit, *src.paths]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        _extract(proc.stdout, work, strip_top=False)
    if proc.returncode != 0:
        raise Unavailable(f"git archive in {repo} exited {proc.returncode}")


def _fetch_git(src: GitSource, work: Path, cache: Path) -> str:
    """Extract ``src`` into ``work``: from a local copy, else cloned into ``cache``."""
    if shutil.which("git") is None:
        raise Unavailable("git is not installed")
    owner, name = src.repo.split("/")
    cloned = cache / f"{owner}+{name}"
    candidates = [*_git_candidates(src), cloned]
    for repo in candidates:
        if repo.is_dir() and _has_commit(repo, src.commit):
            _archive(repo, src, work)
            return f"git {src.repo} {src.tag} ({src.commit}) from {repo}"
    where = ", ".join(str(c) for c in candidates[:-1]) or "no clone found"
    try:
        _clone(src, cloned)
    except Unavailable as exc:
        raise Unavailable(
            f"needs a git clone of {src.repo} with commit {src.commit} ({src.tag}); "
            f"searched $BEANROUTER_PEER_GIT_DIRS (default {DEFAULT_GIT_DIRS}): {where}; {exc}. "
            "Its PyPI sdist and wheel ship no tests."
        ) from None
    _archive(cloned, src, work)
    return f"git {src.repo} {src.tag} ({src.commit}) from {git_url(src)}"


def _pip_target(requirements: tuple[str, ...], site: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-input", "--no-deps"]
    cmd += ["--disable-pip-version-check", "--target", str(site), *requirements]
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise Unavailable(f"pip install {' '.join(requirements)} failed: {done.stderr[-800:]}")


def fetch(suite: PeerSuite, dest: Path) -> str:
    """Put ``suite`` under ``dest`` unless it is there already; return a one-line status."""
    root = suite_root(suite, dest)
    marker = dest / f"{suite.name}.unavailable"
    if is_fetched(suite, dest):
        return f"{suite.name}: present"
    work = dest / f"{suite.name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        if isinstance(suite.source, SdistSource):
            origin = _fetch_sdist(suite.source, work, dest / "_downloads")
        else:
            origin = _fetch_git(suite.source, work, dest / "_git")
        _pip_target(suite.requirements, work / "site")
    except Unavailable as exc:
        shutil.rmtree(work, ignore_errors=True)
        marker.write_text(f"{exc}\n")
        return f"{suite.name}: UNAVAILABLE: {exc}"
    stamp = {"key": suite.key(), "origin": origin, "requirements": list(suite.requirements)}
    (work / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    work.rename(root)
    marker.unlink(missing_ok=True)
    return f"{suite.name}: fetched from {origin}"


def main(argv: list[str] | None = None) -> int:
    """Fetch every pinned suite; always exits 0 (the tests report what is missing)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dest", type=Path, default=peers_dir(), help="default: %(default)s")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only what changed")
    args = parser.parse_args(argv)
    dest: Path = args.dest
    dest.mkdir(parents=True, exist_ok=True)
    for suite in SUITES:
        line = fetch(suite, dest)
        if not (args.quiet and line.endswith(": present")):
            print(f"peers: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
