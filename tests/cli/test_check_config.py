"""``beanrouter check-config``: tube names are checked, YAML errors name the line to look at."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PY = [sys.executable, "-m", "beanrouter"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PY, *args], capture_output=True, text=True, timeout=20.0, stdin=subprocess.DEVNULL
    )


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text("servers:\n  - 127.0.0.1:11301:1 one\n  - 127.0.0.1:11302:1 two\n")
    return path


@pytest.mark.parametrize("tube", ["bad name", "-lead", "x" * 201, "", "caf\u00e9"])
def test_invalid_tube_name_is_refused_not_placed(good: Path, tube: str) -> None:
    done = run("check-config", str(good), "--tube", "emails", "--tube", tube)
    assert done.returncode == 2, done.stdout
    assert done.stdout == ""
    assert "--tube" in done.stderr and f"invalid tube name {tube!r}" in done.stderr


def test_valid_tube_names_are_placed(good: Path) -> None:
    longest = "t" * 200
    done = run("check-config", str(good), "--tube", "a-b_c+d/e;f.g$h(i)", "--tube", longest)
    assert done.returncode == 0, done.stderr
    assert "tube 'a-b_c+d/e;f.g$h(i)' -> " in done.stdout
    assert f"tube '{longest}' -> " in done.stdout


def test_unclosed_bracket_is_reported_on_its_line(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("servers:\n  - 127.0.0.1:11301 one\n  - [127.0.0.1:11302 two\nfailover: 1\n")
    done = run("check-config", str(path))
    assert done.returncode == 1
    assert f"{path}:3: not valid YAML: " in done.stderr
    assert "on line 4" in done.stderr  # where the parser stopped, for reference


def test_draining_shard_is_shown(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "servers:\n  - 127.0.0.1:11301 one\n  - 127.0.0.1:11302 two\n"
        "  - {address: '127.0.0.1:11303', name: three, drain: true}\n"
    )
    tubes = [arg for i in range(40) for arg in ("--tube", f"t{i}")]
    done = run("check-config", str(path), *tubes)
    assert done.returncode == 0, done.stderr
    assert "failover 1, 1 draining" in done.stdout
    assert "  three  " in done.stdout and "draining" in done.stdout.split("three", 1)[1]
    assert "-> three" not in done.stdout  # no tube is placed on it
    assert "consumers also read three until drained" in done.stdout


def test_against_offline_lists_moved_tubes(tmp_path: Path, good: Path) -> None:
    new = tmp_path / "new.yaml"
    new.write_text(good.read_text() + "  - 127.0.0.1:11303:1 three\n")
    tubes = [arg for i in range(40) for arg in ("--tube", f"t{i}")]
    done = run("check-config", str(new), "--against", str(good), "--offline", *tubes)
    assert done.returncode == 0, done.stderr
    assert f"against {good}: " in done.stdout
    assert "-> three" in done.stdout.split("against", 1)[1]
    assert "shard three is new" in done.stdout
    assert "jobs away" not in done.stdout


def test_against_a_bad_old_file(tmp_path: Path, good: Path) -> None:
    bad = tmp_path / "old.yaml"
    bad.write_text("servers: []\n")
    done = run("check-config", str(good), "--against", str(bad), "--offline")
    assert done.returncode == 1
    assert f"{bad}:1: servers:" in done.stderr
