"""beanrouter: make a set of independent beanstalkd servers behave like one big beanstalkd.

Kept import-light: ``beanrouter server`` must be listening fast, so nothing heavy is imported here.
``from beanrouter import Router, Job`` (and the router's exceptions) load ``beanrouter.router`` on
first access, through the module-level ``__getattr__`` below.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Lazily export the router library's public names (``Router``, ``Job``, exceptions...)."""
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    router = importlib.import_module(".router", __name__)
    if name in router.__all__:
        return getattr(router, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
