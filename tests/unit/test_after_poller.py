"""`after_poller` reads the first answer's Retry-After from the pollers azure-ai-ml returns, and falls back safely."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cloud.common import Timing, after_poller

TIMING = Timing(poll_s=0.5)


def _poller(method: object) -> SimpleNamespace:
    return SimpleNamespace(polling_method=lambda: method)


def _answer(headers: object) -> SimpleNamespace:
    return SimpleNamespace(_initial_response=SimpleNamespace(http_response=SimpleNamespace(headers=headers)))


@pytest.mark.parametrize(
    ("poller", "expected"),
    [
        (_poller(_answer({"Retry-After": "7"})), 7.0),  # azure-core's base polling: a compute's create
        (_poller(_answer({"retry-after": "12"})), 12.0),  # header names are case-insensitive
        (_poller(SimpleNamespace(poller=_poller(_answer({"Retry-After": "9"})))), 9.0),  # a workspace's deployment
        (_poller(_answer({"Retry-After": "9000"})), 600.0),  # ARM's RPC: at most 10 minutes
        (_poller(_answer({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"})), 0.5),  # a date: our own pace
        (_poller(_answer({"Retry-After": "0.1"})), 0.5),  # never sooner than poll_s
        (_poller(_answer({})), 0.5),
        (_poller(_answer(None)), 0.5),
        (_poller(SimpleNamespace()), 0.5),  # NoPolling-like, with no first answer kept
        (_poller(None), 0.5),
        (SimpleNamespace(), 0.5),
        (None, 0.5),
    ],
)
def test_the_first_look_follows_the_retry_after_the_poller_kept(poller: object, expected: float) -> None:
    assert after_poller(poller, TIMING) == expected


def test_a_poller_that_cannot_be_read_is_our_own_pace() -> None:
    def broken() -> object:
        raise RuntimeError("the poller's thread is gone")

    assert after_poller(SimpleNamespace(polling_method=broken), TIMING) == 0.5
