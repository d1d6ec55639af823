"""The one decision about a failed message: its copy's id and time, its try count, and when the tries run out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.ports import ReceivedMessage
from engine.redelivery import RetryPolicy, backoff_s, redeliver
from handlers.queues import Action, settle_for
from models.errors import InvalidInputError, Problem, TransientError
from models.messages import DeliveryAttempt, without_attempt
from models.settings import Settings

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=5, base_s=2.0, cap_s=10.0, max_wait_s=60.0)


def _message(message_id: str = "m", **properties: str) -> ReceivedMessage:
    return ReceivedMessage(
        queue="q",
        message_id=message_id,
        body=b"{}",
        correlation_id="r",
        application_properties={"request_id": "r", **properties},
        delivery_count=1,
        lock_token="t",
        locked_until=NOW,
        enqueued_at=NOW,
    )


def _try(n: int, first_at: datetime = NOW) -> ReceivedMessage:
    return _message(
        "m" if n == 1 else f"m/retry-{n - 1}",
        original_message_id="m",
        delivery_attempt=str(n),
        first_attempt_at=first_at.isoformat(),
    )


def test_the_first_failure_schedules_a_copy_under_its_own_id_carrying_the_count() -> None:
    decision = redeliver(_message(), TransientError("down"), POLICY, now=NOW)
    copy = decision.copy
    assert copy is not None and not decision.exhausted
    assert copy.message_id == "m/retry-1" and copy.body == b"{}" and copy.correlation_id == "r"
    assert copy.application_properties == {
        "request_id": "r",
        "original_message_id": "m",
        "delivery_attempt": "2",
        "first_attempt_at": NOW.isoformat(),
    }
    assert 1.0 <= decision.delay_s <= 2.0  # the base, half of it jittered
    assert copy.scheduled_at == NOW + timedelta(seconds=decision.delay_s)
    assert redeliver(_message(), TransientError("down"), POLICY, now=NOW) == decision  # every host decides alike


def test_each_copy_counts_on_from_the_original() -> None:
    decision = redeliver(_try(3, NOW - timedelta(seconds=5)), RuntimeError("bug"), POLICY, now=NOW)
    assert decision.copy is not None and decision.copy.message_id == "m/retry-3"
    props = decision.copy.application_properties
    assert props["delivery_attempt"] == "4" and props["first_attempt_at"] == (NOW - timedelta(seconds=5)).isoformat()
    assert 4.0 <= decision.delay_s <= 8.0 and decision.waited_s == 5.0


def test_retry_after_is_honoured_when_longer_than_the_backoff() -> None:
    assert redeliver(_message(), TransientError("busy", retry_after_s=30), POLICY, now=NOW).delay_s == 30.0
    assert 1.0 <= redeliver(_message(), TransientError("busy", retry_after_s=0.1), POLICY, now=NOW).delay_s <= 2.0


def test_backoff_doubles_up_to_its_cap_and_never_overflows() -> None:
    assert [backoff_s(n, base_s=1, cap_s=10, jitter=1.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert backoff_s(3, base_s=1, cap_s=10, jitter=0.0) == 2.0
    assert backoff_s(10_000, base_s=1, cap_s=60, jitter=1.0) == 60


def test_the_tries_run_out_at_the_count() -> None:
    assert redeliver(_try(4), TransientError("down"), POLICY, now=NOW).copy is not None
    last = redeliver(_try(5), TransientError("down"), POLICY, now=NOW)
    assert last.exhausted and last.describe() == "try 5 of 5, 0 s after the first; no try left"


def test_the_tries_run_out_when_the_next_would_start_after_the_total_wait() -> None:
    early = NOW - timedelta(seconds=POLICY.max_wait_s - 25)
    assert redeliver(_try(2, early), TransientError("down"), POLICY, now=NOW).copy is not None
    assert redeliver(_try(2, early), TransientError("down", retry_after_s=30), POLICY, now=NOW).exhausted
    assert redeliver(_try(2, NOW - timedelta(seconds=POLICY.max_wait_s)), RuntimeError(), POLICY, now=NOW).exhausted


def test_unreadable_attempt_properties_count_as_the_first_try() -> None:
    attempt = DeliveryAttempt.of(
        message_id="x/retry-3", properties={"delivery_attempt": "many", "first_attempt_at": "yesterday"}, now=NOW
    )
    assert attempt == DeliveryAttempt(original_id="x/retry-3", number=1, first_at=NOW)
    future = DeliveryAttempt.of(
        message_id="x", properties={"delivery_attempt": b"3", "first_attempt_at": "2099-01-01T00:00:00+00:00"}, now=NOW
    )
    assert (future.number, future.first_at) == (3, NOW)  # a clock ahead of ours cannot lengthen the budget
    again = DeliveryAttempt.of(message_id="x/retry-2", properties=future.properties(), now=NOW)
    assert again == future and again.copy_id == "x/retry-2"


def test_a_replay_starts_counting_anew() -> None:
    props = {"request_id": "r", **DeliveryAttempt("m", 4, NOW).properties()}
    assert without_attempt(props) == {"request_id": "r"}


def test_settlement_says_complete_dead_letter_or_retry_later() -> None:
    assert settle_for(_message(), None, POLICY, now=NOW).action == Action.COMPLETE
    invalid = settle_for(_message(), InvalidInputError([Problem("(body)", "not a step")]), POLICY, now=NOW)
    assert (invalid.action, invalid.reason) == (Action.DEAD_LETTER, "InvalidMessage")
    later = settle_for(_message(), KeyError("surprise"), POLICY, now=NOW)
    assert later.action == Action.RETRY_LATER and later.copy is not None
    assert later.description.startswith("KeyError: 'surprise' (try 1 of 5; again in ")
    spent = settle_for(_try(5), TransientError("still down"), POLICY, now=NOW)
    assert (spent.action, spent.reason, spent.copy) == (Action.DEAD_LETTER, "RetriesExhausted", None)
    assert spent.description == "TransientError: still down (try 5 of 5, 0 s after the first; no try left)"


def test_the_defaults_ride_out_minutes_of_outage() -> None:
    policy = RetryPolicy.defaults()
    assert policy == RetryPolicy.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    # The shortest schedule the jitter allows still spans more than four minutes before giving up.
    retries = range(1, policy.max_attempts)
    shortest = sum(backoff_s(n, base_s=policy.base_s, cap_s=policy.cap_s, jitter=0.0) for n in retries)
    longest = sum(backoff_s(n, base_s=policy.base_s, cap_s=policy.cap_s, jitter=1.0) for n in retries)
    assert shortest > 240 and longest < policy.max_wait_s


def test_copies_of_a_long_message_id_stay_within_what_service_bus_takes() -> None:
    from models.messages import MAX_MESSAGE_ID, DeliveryAttempt

    long_id = "onboarding-" + "x" * 117  # 128 characters: the longest id Service Bus takes
    first = DeliveryAttempt(original_id=long_id, number=1, first_at=datetime(2026, 1, 1, tzinfo=UTC))
    copies = [first.next(), first.next().next()]
    assert first.copy_id == long_id
    assert all(len(c.copy_id) <= MAX_MESSAGE_ID for c in copies)
    assert len({c.copy_id for c in copies}) == 2 and all(c.original_id == long_id for c in copies)
    short = DeliveryAttempt(original_id="m-1", number=3, first_at=first.first_at)
    assert short.copy_id == "m-1/retry-2"
