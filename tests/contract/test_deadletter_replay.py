"""An operator replays an onboarding dead letter as its sender, whose token was valid when it was sent.

By the time an operator replays a dead letter its sender's token (an hour's life) has usually
expired. The replay proves the sender as of when the bus took the message in: signature, issuer,
audience and tenant as always, the times against the enqueue time; then the sender, not the
operator, is decided again by the authorisation function.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from adapters.sqlite_bus import SqliteBus
from composition import Container
from devhost.identity import LocalIssuer
from engine.deadletters import ReplayRefusedError
from handlers.queues import SENDER_PROPERTY
from models.errors import ConflictError
from models.identity import AuthenticationError
from models.records import RequestStatus
from models.settings import Settings
from tests.conftest import example
from tests.fakes import FakeCloud

TWO_HOURS = 7200.0


class Clock:
    """The bus's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def bed(settings: Settings) -> tuple[Container, SqliteBus, Clock]:
    clock = Clock()
    bus = SqliteBus(":memory:", clock=clock)
    container = Container(settings, bus=bus, cloud=FakeCloud(), sinks=[])
    container.swap(preflight=None)
    return container, bus, clock


def _token(container: Container, user: str, *, issued_at: float) -> str:
    """A token of the container's own issuer (same key, same issuer), issued at another time."""
    issuer = container.local_issuer
    assert issuer is not None
    then = LocalIssuer(directory=issuer.directory, key=issuer._key, issuer=issuer.issuer, clock=lambda: issued_at)
    found = issuer.directory.find(user)
    assert found is not None
    return then.issue(found).access_token.get_secret_value()


def _dead_letter(bus: SqliteBus, clock: Clock, body: dict[str, object], token: str, *, sent: datetime) -> str:
    from engine.ports import OutgoingMessage

    clock.now = sent
    bus.send(
        "onboarding",
        OutgoingMessage(
            message_id="m-1",
            body=json.dumps(body).encode(),
            application_properties={SENDER_PROPERTY: f"Bearer {token}"},
        ),
    )
    [received] = bus.receive("onboarding")
    bus.dead_letter(received, reason="RetriesExhausted", description="the store did not answer")
    clock.now = datetime.now(UTC)
    return received.message_id


def test_a_dead_letter_whose_token_expired_since_is_replayed_as_its_sender(
    bed: tuple[Container, SqliteBus, Clock],
) -> None:
    container, bus, clock = bed
    issued = time.time() - TWO_HOURS  # expired an hour ago
    token = _token(container, "alice", issued_at=issued)
    letter = _dead_letter(bus, clock, example("cpu-small.json"), token, sent=datetime.fromtimestamp(issued + 60, UTC))
    # At the door, the same token is refused now.
    with pytest.raises(AuthenticationError, match="expired"):
        container.authenticator.authenticate({"authorization": f"Bearer {token}"})
    outcome = container.deadletters.replay(letter)
    assert outcome.startswith("processed again as m-1/replay-"), outcome
    assert "sent by 1f3a5c7e-9b2d-4e6f-8a1c-3e5a7c9e1b01" in outcome
    [made] = container.store.list_requests(team="fraud-detection").items
    assert made.status == RequestStatus.ACCEPTED and made.requester == "1f3a5c7e-9b2d-4e6f-8a1c-3e5a7c9e1b01"
    assert bus.dead_letters("onboarding") == []


def test_the_sender_is_decided_again_not_the_operator(bed: tuple[Container, SqliteBus, Clock]) -> None:
    container, bus, clock = bed
    issued = time.time() - TWO_HOURS
    token = _token(container, "bob", issued_at=issued)  # churn, asking for fraud-detection
    letter = _dead_letter(bus, clock, example("cpu-small.json"), token, sent=datetime.fromtimestamp(issued + 60, UTC))
    outcome = container.deadletters.replay(letter)
    assert "(rejected)" in outcome, outcome
    [rejected] = container.store.list_requests(status=RequestStatus.REJECTED).items
    assert rejected.requester == "2e4b6d8f-0c3e-4f7a-9b2d-4f6b8d0f2c02"
    assert rejected.problems[0]["code"] == "NotTeamMember"


def test_a_token_already_expired_when_the_message_was_sent_proves_nobody(
    bed: tuple[Container, SqliteBus, Clock],
) -> None:
    container, bus, clock = bed
    issued = time.time() - 3 * TWO_HOURS
    token = _token(container, "alice", issued_at=issued)
    sent = datetime.fromtimestamp(issued, UTC) + timedelta(hours=2)  # an hour after the token expired
    letter = _dead_letter(bus, clock, example("cpu-small.json"), token, sent=sent)
    with pytest.raises(ReplayRefusedError, match=r"cannot be proven .*expired when the message was sent"):
        container.deadletters.replay(letter)
    assert [d.message_id for d in bus.dead_letters("onboarding")] == [letter]  # kept, nothing made
    assert container.store.list_requests().items == []
    # Recorded, the rejected record names nobody: the body's requested_by is never believed.
    assert container.deadletters.process() >= 1
    [record] = container.store.list_requests().items
    assert record.status == RequestStatus.REJECTED and record.requester == "unknown"


def test_a_forged_token_is_not_made_valid_by_an_old_enqueue_time(bed: tuple[Container, SqliteBus, Clock]) -> None:
    container, bus, clock = bed
    token = _token(container, "alice", issued_at=time.time() - TWO_HOURS)
    head, body, signature = token.split(".")
    forged = f"{head}.{body}.{signature[:-4]}AAAA"
    letter = _dead_letter(bus, clock, example("cpu-small.json"), forged, sent=datetime.now(UTC) - timedelta(hours=2))
    with pytest.raises(ReplayRefusedError, match="signature"):
        container.deadletters.replay(letter)


class LeftEveryGroup:
    """The directory today: the sender has left every group since the message was sent."""

    def member_groups(self, *, principal: str, groups: list[str]) -> frozenset[str]:
        return frozenset()


def test_a_sender_who_left_the_team_since_is_refused_at_replay(bed: tuple[Container, SqliteBus, Clock]) -> None:
    container, bus, clock = bed
    issued = time.time() - TWO_HOURS
    token = _token(container, "alice", issued_at=issued)  # the token still lists fraud-detection's group
    letter = _dead_letter(bus, clock, example("cpu-small.json"), token, sent=datetime.fromtimestamp(issued + 60, UTC))
    container.swap(membership=LeftEveryGroup())
    outcome = container.deadletters.replay(letter)
    assert "(rejected)" in outcome, outcome
    [rejected] = container.store.list_requests(status=RequestStatus.REJECTED).items
    assert rejected.problems[0]["code"] == "NotTeamMember"
    assert container.store.list_requests(team="fraud-detection").items == []  # not in the team's listing


def test_a_dead_letter_older_than_the_replay_limit_is_not_replayed_as_anyone(
    bed: tuple[Container, SqliteBus, Clock],
) -> None:
    container, bus, clock = bed
    age = container.settings.dead_letter_replay_max_age_s
    issued = time.time() - age - TWO_HOURS
    token = _token(container, "alice", issued_at=issued)
    letter = _dead_letter(bus, clock, example("cpu-small.json"), token, sent=datetime.fromtimestamp(issued + 60, UTC))
    with pytest.raises(ReplayRefusedError, match="more than 7 days ago"):
        container.deadletters.replay(letter)
    assert [d.message_id for d in bus.dead_letters("onboarding")] == [letter]


def test_letters_sharing_a_message_id_are_told_apart_by_sequence_and_a_replay_is_the_same_work_twice(
    bed: tuple[Container, SqliteBus, Clock],
) -> None:
    container, bus, clock = bed
    now = datetime.now(UTC)
    alice = _token(container, "alice", issued_at=time.time())
    bob = _token(container, "bob", issued_at=time.time())
    _dead_letter(bus, clock, example("cpu-small.json"), alice, sent=now)
    churn = example("onboarding.json") | {"environments": ["dev"]}
    # Past the bus's duplicate window a message id may come again (from anyone).
    _dead_letter(bus, clock, churn, bob, sent=now + timedelta(minutes=11))
    first, second = bus.dead_letters("onboarding")
    assert first.message_id == second.message_id == "m-1" and first.sequence != second.sequence
    with pytest.raises(ConflictError, match="say which with its sequence number") as ambiguous:
        container.deadletters.replay("m-1")
    assert ambiguous.value.code == "AmbiguousDeadLetter"
    outcome = container.deadletters.replay("m-1", second.sequence)
    assert f"m-1/replay-{second.sequence}" in outcome and "sent by 2e4b6d8f" in outcome
    # Exactly the replayed letter is gone; alice's stays.
    assert [(d.message_id, d.sequence) for d in bus.dead_letters("onboarding")] == [("m-1", first.sequence)]
    [made] = container.store.list_requests(team="churn").items
    # The same letter replayed again (a retry after a fault) finds what the first replay made.
    again = container.intake.onboard(
        body=json.dumps(churn).encode(),
        message_id=f"m-1/replay-{second.sequence}",
        sender=container.authenticator.authenticate({"authorization": f"Bearer {bob}"}),
    )
    assert [r.id for r in again] == [made.id]


def test_a_sender_cannot_answer_for_another_senders_message_id(bed: tuple[Container, SqliteBus, Clock]) -> None:
    container, _, _ = bed
    bob = container.authenticator.authenticate(
        {"authorization": f"Bearer {_token(container, 'bob', issued_at=time.time())}"}
    )
    alice = container.authenticator.authenticate(
        {"authorization": f"Bearer {_token(container, 'alice', issued_at=time.time())}"}
    )
    body = json.dumps(example("cpu-small.json")).encode()
    # bob sends fraud-detection's request first, under the id fraud-detection's own system will use.
    [squat] = container.intake.onboard(body=body, message_id="fd-ticket-42", sender=bob)
    assert squat.status == RequestStatus.REJECTED and squat.team == ""  # not in fraud-detection's listing
    [real] = container.intake.onboard(body=body, message_id="fd-ticket-42", sender=alice)
    assert real.status == RequestStatus.ACCEPTED and real.id != squat.id
    assert [r.id for r in container.store.list_requests(team="fraud-detection").items] == [real.id]
