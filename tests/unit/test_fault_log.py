"""The fault log: one line per kind of fault, again after a quiet interval or once faults cleared."""

from __future__ import annotations

import logging

import pytest

from adapters.fault_log import FaultLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "faults"]


def test_a_kind_is_logged_once_until_the_quiet_interval_passes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    faults = FaultLog(logging.getLogger("faults"), quiet_s=60, clock=clock)
    assert faults.fault("StoreReadOnly", "state.db is read-only")
    for _ in range(5):
        clock.now += 10
        assert not faults.fault("StoreReadOnly", "state.db is read-only")
    assert _lines(caplog) == ["StoreReadOnly: state.db is read-only (logged at most every 60 s)"]
    clock.now += 11  # 61 s after the first line
    assert faults.fault("StoreReadOnly", "state.db is read-only")
    assert _lines(caplog)[-1] == (
        "StoreReadOnly: state.db is read-only (logged at most every 60 s; met 5 more times since it was last logged)"
    )
    assert faults.active() == ["StoreReadOnly"]


def test_a_new_kind_is_logged_at_once_and_clearing_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    faults = FaultLog(logging.getLogger("faults"), clock=Clock())
    faults.fault("StoreReadOnly", "read-only")
    faults.fault("StoreFull", "full")
    faults.fault("StoreReadOnly", "read-only")
    assert len(_lines(caplog)) == 2
    assert faults.cleared("the store")
    assert not faults.cleared("the store")
    assert _lines(caplog)[-1] == "the store works again (faults seen before: StoreFull, StoreReadOnly)"
    assert faults.fault("StoreReadOnly", "read-only")  # after clearing, the next fault is news again
    assert len(_lines(caplog)) == 4
