"""Parts built on first use, so that the Functions entry imports in milliseconds.

The Python worker imports `function_app` to index its functions before any of them runs, and a cold
instance pays for that import before its first invocation. What the import does not need (FastAPI, the
models, the store and bus clients) is built when a function first needs it, or earlier by the warm-up
trigger when scale-out adds the instance. Microsoft Learn, "Azure Functions warmup trigger": "Make sure
your logic can load all required dependencies without relying on the warmup trigger. Lazy loading is a
good pattern to achieve this goal." (https://learn.microsoft.com/azure/azure-functions/functions-bindings-warmup)

Nothing here imports more than the standard library.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Lazy(Generic[T]):
    """A value built once, by the first caller; callers that come while it is built wait for it.

    A build that raises is not kept: the next caller builds again (a store that could not be reached
    at the first invocation may be reachable at the next), and each caller sees the build's own error.
    """

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        """Whether the value is there (without building it)."""
        return self._value is not None

    def get(self) -> T:
        """Return the value, building it first if no caller has yet."""
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._build()
                value = self._value
        return value


class LazyAsgi:
    """An ASGI app that builds the real one on its first HTTP call, off the event loop, and hands every call on.

    It answers the lifespan protocol itself (startup and shutdown complete at once): the app it builds
    has no lifespan handlers (create_api registers none; tests/unit/test_lazy.py checks), and building it
    for AsgiFunctionApp's startup notice would hide a failed build behind "ASGI middleware startup
    failed". A build that fails fails that HTTP call with its own error, and the next call builds again.
    """

    def __init__(self, build: Callable[[], AsgiApp]) -> None:
        self.app = Lazy(build)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer lifespan events; build the app if it is not yet built (in a worker thread), then call it."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        app = self.app.get() if self.app.built else await asyncio.to_thread(self.app.get)
        await app(scope, receive, send)
