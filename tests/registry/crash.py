"""A crash at any point between registry calls: a forked child that SIGKILLs itself right
after its k-th registry write (every MlflowClient method that sets, deletes, updates or
creates). Reads change nothing, so killing after each write covers every point between calls.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from mlflow import MlflowClient

WRITES = ("set_", "delete_", "update_", "create_")


def die_after_writes(k: int, work: Callable[[], object]) -> int:
    """Run `work` in a forked child that SIGKILLs itself after its k-th registry write;
    returns the signal that ended it (0: it finished first)."""
    pid = os.fork()
    if pid == 0:  # the child: count writes on every client method, die after the k-th
        done = [0]
        for name in dir(MlflowClient):
            if name.startswith(WRITES):
                setattr(MlflowClient, name, _killing(getattr(MlflowClient, name), done, k))
        try:
            work()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0


def _killing(method, done: list[int], k: int):
    def call(*args, **kwargs):
        result = method(*args, **kwargs)
        done[0] += 1
        if done[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    return call
