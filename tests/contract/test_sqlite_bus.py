"""The embedded bus against Service Bus semantics: locks, redelivery, dead letters, schedules, duplicates."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from adapters.sqlite_bus import LockLostError, SqliteBus
from engine.ports import OutgoingMessage


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def bus(clock: Clock) -> SqliteBus:
    return SqliteBus(":memory:", lock_s=30, max_deliveries=3, duplicate_window_s=600, clock=clock)


def _msg(mid: str, at: datetime | None = None) -> OutgoingMessage:
    return OutgoingMessage(
        message_id=mid, body=mid.encode(), correlation_id="r1", application_properties={"k": "v"}, scheduled_at=at
    )


def test_peek_lock_hides_a_message_until_its_lock_expires(bus: SqliteBus, clock: Clock) -> None:
    bus.send("q", _msg("a"))
    [m] = bus.receive("q")
    assert (m.message_id, m.body, m.delivery_count, m.application_properties) == ("a", b"a", 1, {"k": "v"})
    assert bus.receive("q") == []
    clock.advance(29)
    assert bus.receive("q") == []
    clock.advance(2)
    [again] = bus.receive("q")
    assert again.delivery_count == 2
    with pytest.raises(LockLostError):
        bus.complete(m)  # the first lock is gone
    bus.complete(again)
    clock.advance(60)
    assert bus.receive("q") == []


def test_abandon_redelivers_at_once_and_max_deliveries_dead_letters(bus: SqliteBus) -> None:
    bus.send("q", _msg("a"))
    for expected in (1, 2, 3):
        [m] = bus.receive("q")
        assert m.delivery_count == expected
        bus.abandon(m)
    assert bus.receive("q") == []
    [dead] = bus.dead_letters("q")
    assert dead.reason == "MaxDeliveryCountExceeded"
    assert dead.delivery_count == 3
    assert bus.counts("q") == {"active": 0, "scheduled": 0, "locked": 0, "dead": 1}


def test_explicit_dead_letter_keeps_the_reason(bus: SqliteBus) -> None:
    bus.send("q", _msg("a"))
    [m] = bus.receive("q")
    bus.dead_letter(m, reason="InvalidMessage", description="not a step message")
    [dead] = bus.dead_letters("q")
    assert (dead.message_id, dead.reason, dead.description) == ("a", "InvalidMessage", "not a step message")
    with pytest.raises(LockLostError):
        bus.complete(m)


def test_scheduled_messages_wait_for_their_time(bus: SqliteBus, clock: Clock) -> None:
    bus.send("q", _msg("later", clock.now + timedelta(seconds=10)))
    bus.send("q", _msg("now"))
    assert [m.message_id for m in bus.receive("q", max_messages=5)] == ["now"]
    assert bus.counts("q")["scheduled"] == 1
    clock.advance(10)
    assert [m.message_id for m in bus.receive("q", max_messages=5)] == ["later"]


def test_duplicates_are_dropped_within_the_window(bus: SqliteBus, clock: Clock) -> None:
    bus.send("q", _msg("a"))
    bus.send("q", _msg("a"))
    [m] = bus.receive("q", max_messages=5)
    bus.complete(m)
    bus.send("q", _msg("a"))  # same id, still inside the window
    assert bus.receive("q") == []
    clock.advance(601)
    bus.send("q", _msg("a"))
    assert len(bus.receive("q")) == 1
    bus.send("other", _msg("a"))  # windows are per queue
    assert len(bus.receive("other")) == 1


def test_many_threads_never_get_the_same_message() -> None:
    bus = SqliteBus(":memory:", lock_s=60)
    for i in range(300):
        bus.send("q", _msg(f"m{i}"))
    got: Counter[str] = Counter()
    lock = threading.Lock()

    def worker() -> None:
        while batch := bus.receive("q", max_messages=3):
            for m in batch:
                with lock:
                    got[m.message_id] += 1
                bus.complete(m)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 300
    assert set(got.values()) == {1}


def test_receive_waits_for_a_message_sent_meanwhile() -> None:
    bus = SqliteBus(":memory:")
    threading.Timer(0.1, lambda: bus.send("q", _msg("late"))).start()
    assert [m.message_id for m in bus.receive("q", wait_s=5)] == ["late"]
