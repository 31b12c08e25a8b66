"""pyroute2 calls from code that may run inside an asyncio loop.

pyroute2 0.9's synchronous IPRoute drives its own asyncio loop with run_until_complete, which
fails with "This event loop is already running" when the caller is itself a coroutine (the
IKE daemon). Such calls run on a short-lived helper thread instead, where no loop runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

R = TypeVar("R")


def outside_loop(fn: Callable[..., R], *args, timeout: float = 10.0, **kwargs) -> R:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn(*args, **kwargs)
    result: list = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    t = threading.Thread(target=run, name="ocfpy-netlink", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"netlink call {getattr(fn, '__name__', fn)} took over {timeout} s")
    if error:
        raise error[0]
    return result[0]
