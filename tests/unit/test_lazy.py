"""Parts built on first use (handlers/lazy.py): built once, by one caller, and built again after a failure."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from handlers.lazy import Lazy, LazyAsgi


def test_built_once_however_many_threads_ask_at_once() -> None:
    builds: list[int] = []

    def build() -> object:
        builds.append(1)
        time.sleep(0.05)  # long enough for every thread to arrive while it builds
        return object()

    lazy = Lazy(build)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(lazy.get())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len({id(g) for g in got}) == 1 and lazy.built


def test_a_failed_build_is_not_kept_and_the_next_caller_builds_again() -> None:
    outcomes = iter([RuntimeError("the store cannot be reached"), "built"])

    def build() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    lazy = Lazy(build)
    with pytest.raises(RuntimeError, match="cannot be reached"):
        lazy.get()
    assert not lazy.built
    assert lazy.get() == "built" and lazy.built


def _sink() -> tuple[list[Any], Any]:
    """What an ASGI app sends, kept; and the `send` that keeps it."""
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    return sent, send


async def receive() -> Any:
    return {}


def test_lifespan_is_answered_without_building_the_app() -> None:
    built: list[int] = []
    app = LazyAsgi(lambda: built.append(1) or (lambda scope, receive, send: None))  # type: ignore[func-returns-value,arg-type,return-value]
    events = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent, send = _sink()

    async def lifespan() -> Any:
        return next(events)

    asyncio.run(app({"type": "lifespan"}, lifespan, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"] and built == []


def test_the_http_app_has_no_lifespan_handlers_that_answering_lifespan_would_skip() -> None:
    from contextlib import AbstractAsyncContextManager

    from composition import Container
    from handlers.api import create_api
    from models.settings import Settings

    api = create_api(lambda: Container(Settings()))
    assert api.router.on_startup == [] and api.router.on_shutdown == []
    # Starlette's default lifespan context does nothing but run those (empty) handlers.
    context = api.router.lifespan_context(api)
    assert isinstance(context, AbstractAsyncContextManager)
    assert type(context).__name__ == "_DefaultLifespan"


def test_a_failed_build_fails_the_call_with_its_own_error_and_the_next_call_builds_again() -> None:
    attempts: list[int] = []

    async def real(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "done"})

    def build() -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("the policy file cannot be read")
        return real

    app = LazyAsgi(build)
    sent, send = _sink()

    with pytest.raises(RuntimeError, match="policy file cannot be read"):
        asyncio.run(app({"type": "http"}, receive, send))
    asyncio.run(app({"type": "http"}, receive, send))
    assert len(attempts) == 2 and sent == [{"type": "done"}]


def test_the_asgi_app_is_built_on_its_first_call_off_the_loop_and_called_with_every_event() -> None:
    calls: list[str] = []
    loop_threads: list[int] = []

    async def real(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["type"])
        await send({"type": "done"})

    def build() -> Any:
        loop_threads.append(threading.get_ident())
        return real

    app = LazyAsgi(build)
    sent, send = _sink()

    async def run() -> int:
        await app({"type": "http"}, receive, send)
        await app({"type": "websocket"}, receive, send)
        return threading.get_ident()

    loop_thread = asyncio.run(run())
    assert calls == ["http", "websocket"] and len(sent) == 2
    assert len(loop_threads) == 1 and loop_threads[0] != loop_thread  # built once, not on the event loop
