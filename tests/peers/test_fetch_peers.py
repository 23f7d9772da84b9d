"""``fetch_peers``: a suite pinned to a git commit comes from a local copy first, else from its
public repository, else it is marked unavailable (and its tests skip).

The public repository is stood in for by a bare repository served by a ``file://`` URL
(``$BEANROUTER_PEERS_URL``): no test here needs a network.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from . import fetch_peers
from .fetch_peers import GitSource, PeerSuite, fetch, is_fetched, suite_root, unavailable_reason

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def upstream(tmp_path: Path) -> tuple[str, str]:
    """A public repository ``owner/peer`` under a ``file://`` base URL: (base URL, the pinned
    commit, which is not the tip of its branch)."""
    src = tmp_path / "src"
    _git("init", "--quiet", str(src))
    (src / "tests").mkdir()
    (src / "tests" / "test_peer.py").write_text("def test_one():\n    pass\n")
    (src / "README").write_text("not extracted\n")
    _git("-C", str(src), "add", ".")
    _git("-C", str(src), "commit", "--quiet", "-m", "pinned")
    pinned = _git("-C", str(src), "rev-parse", "HEAD")
    (src / "tests" / "test_later.py").write_text("def test_two():\n    pass\n")
    _git("-C", str(src), "add", ".")
    _git("-C", str(src), "commit", "--quiet", "-m", "later")
    base = tmp_path / "public"
    (base / "owner").mkdir(parents=True)
    _git("clone", "--quiet", "--bare", str(src), str(base / "owner" / "peer"))
    return f"file://{base}", pinned


def _suite(commit: str) -> PeerSuite:
    return PeerSuite(
        name="peer-1.0",
        source=GitSource(repo="owner/peer", commit=commit, tag="v1.0", paths=("tests",)),
        requirements=(),
        test_paths=("tests",),
        expected_passed=1,
        uses_binlog=False,
    )


@pytest.fixture
def no_local_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No local clone anywhere, and no pip (the suite needs nothing installed)."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("BEANROUTER_PEER_GIT_DIRS", str(mirror))
    monkeypatch.setattr(fetch_peers, "_pip_target", lambda requirements, site: None)
    return mirror


def test_without_a_local_copy_the_pinned_commit_is_cloned(
    upstream: tuple[str, str], no_local_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, pinned = upstream
    monkeypatch.setenv("BEANROUTER_PEERS_URL", url + "/")
    dest = tmp_path / "peers"
    suite = _suite(pinned)
    line = fetch(suite, dest)
    assert line == f"peer-1.0: fetched from git owner/peer v1.0 ({pinned}) from {url}/owner/peer"
    assert is_fetched(suite, dest)
    root = suite_root(suite, dest)
    assert sorted(p.name for p in (root / "tests").iterdir()) == ["test_peer.py"]  # as pinned
    assert not (root / "README").exists()  # only the suite's paths
    assert unavailable_reason(suite, dest) is None
    # The clone is kept as a local copy: fetched again (the pin changed, say), no network needed.
    shutil.rmtree(root)
    monkeypatch.setenv("BEANROUTER_PEERS_URL", "file:///nonexistent")
    assert fetch(suite, dest).endswith(f"from {dest / '_git' / 'owner+peer'}")
    assert (suite_root(suite, dest) / "tests" / "test_peer.py").exists()


def test_a_local_copy_comes_first(
    upstream: tuple[str, str], no_local_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, pinned = upstream
    local = no_local_copy / "owner+peer"
    _git("clone", "--quiet", "--bare", url + "/owner/peer", str(local))
    monkeypatch.setenv("BEANROUTER_PEERS_URL", "file:///nonexistent")
    dest = tmp_path / "peers"
    assert fetch(_suite(pinned), dest) == (
        f"peer-1.0: fetched from git owner/peer v1.0 ({pinned}) from {local}"
    )
    assert not (dest / "_git").exists()  # nothing cloned


@pytest.mark.parametrize("where", ["no repository", "no such commit"])
def test_when_the_clone_fails_the_suite_is_unavailable(
    where: str,
    upstream: tuple[str, str],
    no_local_copy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, pinned = upstream
    if where == "no repository":
        monkeypatch.setenv("BEANROUTER_PEERS_URL", f"file://{tmp_path / 'nowhere'}")
    else:
        monkeypatch.setenv("BEANROUTER_PEERS_URL", url)
        pinned = "0" * 40
    dest = tmp_path / "peers"
    suite = _suite(pinned)
    line = fetch(suite, dest)
    assert line.startswith("peer-1.0: UNAVAILABLE: needs a git clone of owner/peer")
    assert not is_fetched(suite, dest)
    reason = unavailable_reason(suite, dest)  # what test_peer_suites.py skips with
    assert reason is not None and f"cannot fetch {pinned} from " in reason
    assert not suite_root(suite, dest).exists()
    assert not (dest / "_git" / "owner+peer").exists()  # no half clone left to be trusted


def test_the_default_url_is_the_public_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BEANROUTER_PEERS_URL", raising=False)
    src = GitSource(repo="justinmayhew/greenstalk", commit="0" * 40, tag="v", paths=())
    assert fetch_peers.git_url(src) == "https://github.com/justinmayhew/greenstalk"
