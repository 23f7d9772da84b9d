"""Package surface: lazy exports, configuration entry points (no servers needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import beanrouter
from beanrouter.router import ConfigError, Router, check_config

REPO = Path(__file__).resolve().parents[2]


def test_import_beanrouter_stays_light() -> None:
    code = (
        "import sys, beanrouter\n"
        "names = ('beanrouter.router', 'yaml', 'uhashring', 'click')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from beanrouter import Router, Job, ShardUnavailable\n"
        "assert 'beanrouter.router' in sys.modules\n"
        "print(beanrouter.__version__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == beanrouter.__version__


def test_lazy_attributes() -> None:
    assert beanrouter.Router is Router
    with pytest.raises(AttributeError):
        _ = beanrouter.NoSuchThing  # type: ignore[attr-defined]


def test_from_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("servers:\n  - 127.0.0.1:1 a id=0\n  - 127.0.0.1:2 b id=1\nfailover: 0\n")
    r = Router.from_config(path, timeout=1.0)
    assert r.shards == ("a", "b")
    assert len(r.preference("default")) == 1
    assert r.shard_for("default") in ("a", "b")
    r.close()
    with pytest.raises(ConfigError):
        Router.from_config(tmp_path / "missing.yaml")
    assert "2 shards" in check_config(path)


def test_bad_arguments() -> None:
    r = Router(["127.0.0.1:1 a id=0"])
    with pytest.raises(ValueError, match="invalid tube name"):
        r.use("-bad")
    with pytest.raises(ValueError, match="invalid tube name"):
        r.watch("")
    with pytest.raises(ValueError, match="priority must be in"):
        r.put(b"x", priority=-1)
    r.close()
    with pytest.raises(Exception, match="closed"):
        r.put(b"x")


@pytest.mark.parametrize(
    ("field", "value"),
    [("timeout", 0), ("timeout", -1.0), ("timeout", float("nan")), ("connect_timeout", 0.0),
     ("failover", -1), ("failover", 1.5)],
)  # fmt: skip
def test_overrides_are_validated(field: str, value: object) -> None:
    # timeout=0 reached the socket layer as "no timeout": a shard that never answered hung
    # the caller forever. Overrides are checked like the configuration's fields.
    with pytest.raises(ConfigError) as info:
        Router(["127.0.0.1:1 a id=0"], **{field: value})  # type: ignore[arg-type]
    assert info.value.field == field
