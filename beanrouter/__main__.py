"""``python -m beanrouter``: the ``beanrouter`` command line.

A child started by ``beanrouter.proxy.child.spawn`` (a shard of ``beanrouter cluster``, a worker of
``beanrouter proxy --workers``) has ``BEANROUTER_PARENT_PID`` (``child.PARENT_ENV``) in its
environment: it first follows the supervisor's instructions (``child.adopt``: die with the
supervisor, take the listening socket it was handed). The command line is the top layer, so it
calls the supervision code, never the other way round.
"""

import os

if __name__ == "__main__":
    if "BEANROUTER_PARENT_PID" in os.environ:
        from .proxy.child import adopt

        adopt()
    from .cli import main

    main()
