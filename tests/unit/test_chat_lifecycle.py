"""Chat's lifecycle verbs (delete, extend, status) and the message each ending of a run posts.

The acts go through `engine.lifecycle.Lifecycle` with the chat user's mapped caller, on the fake cloud
with real step workers. Each refusal is the one authorisation function's: Fred is in another team (the
request does not exist for him), Pat reads every team but may change none; a delete confirmed after
its asker left the team is refused when it is used.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from composition import Container
from engine.authz import Authorizer
from engine.chat import Reply, Who, chat_caller
from handlers.chat import _interaction
from models.lifecycle import DriftFinding
from models.outcomes import Fail
from models.policy import TeamAccess
from models.records import RequestRecord, RequestStatus, SlackConversation, TeamsConversation
from models.settings import Settings
from tests.conftest import poll, running_steps
from tests.fakes import FakeCloud
from tests.unit.test_chat import ADA, FRAUD, FRED, PAT, VISION, Audit, Bed, Directory, make_chat

SLACK_HERE = SlackConversation(user="U2CERLKJA", channel="C1")
MISSING = "01J0NOTHERE0000000000000000"


@dataclass
class Life:
    bed: Bed
    cloud: FakeCloud

    @property
    def container(self) -> Container:
        return self.bed.container

    def slack(self, user: object = ADA) -> Who:
        return self.bed.who(user)  # type: ignore[arg-type]

    def say(self, text: str, who: Who | None = None) -> Reply:
        return self.bed.chat.handle(who=who or self.slack(), text=text, reply_to=SLACK_HERE)

    def record(self, rid: str) -> RequestRecord:
        found = self.container.store.get_request(rid)
        assert found is not None
        return found

    def settled(self, rid: str) -> RequestRecord:
        def done() -> RequestRecord | None:
            record = self.record(rid)
            return record if record.status.terminal else None

        found: RequestRecord = poll(done, what=f"request {rid} to settle")
        return found

    def result(self, rid: str) -> Reply:
        record = self.record(rid)
        return self.bed.chat.result(record, self.container.store.get_steps(rid))

    def made(self, message_id: str = "m1", *, settle: bool = True) -> str:
        reply = self.bed.chat.handle(
            who=Who("teams", str(ADA.teams_user), ADA),
            text="create team=vision env=dev region=westeurope profile=cpu-small cost-center=CC-1 confirm=yes",
            reply_to=TeamsConversation(message_id=message_id, conversation="19:a@thread.skype"),
        )
        assert reply.title.startswith("Provisioning"), reply.text()
        rid = reply.buttons[0].value
        if settle:
            assert self.settled(rid).status == RequestStatus.SUCCEEDED
        return rid


@pytest.fixture
def life(settings: Settings) -> Iterator[Life]:
    cloud = FakeCloud()
    container = Container(settings, cloud=cloud)
    policy = container.policy.model_copy(
        update={
            "chat_users": [ADA, FRED, PAT],
            "teams": {"vision": TeamAccess(groups=[UUID(VISION)]), "fraud": TeamAccess(groups=[UUID(FRAUD)])},
        }
    )
    directory, audit = Directory(), Audit()
    # One authorisation function with one directory: the chat's, the lifecycle's (the container's guard).
    container.swap(policy=policy, membership=directory, authorizer=Authorizer(policy=policy, membership=directory))
    chat = make_chat(container, policy, authorizer=lambda: Authorizer(policy=policy, membership=directory), audit=audit)
    bed = Bed(container, policy, directory, audit, chat)
    bed.member(ADA, VISION)
    bed.member(FRED, FRAUD)
    with running_steps(container):
        yield Life(bed, cloud)


# ----- delete -----------------------------------------------------------------------------------


def test_delete_is_offered_first_and_torn_down_only_by_its_askers_button(life: Life) -> None:
    rid = life.made()

    offer = life.say(f"delete {rid}")

    assert offer.ok and offer.title == "Delete mlw-vision-dev?"
    [confirm, keep] = offer.buttons
    assert confirm.action == "confirm_delete" and confirm.style == "danger"
    assert keep.action == "cancel" and keep.value == "delete"
    assert any("soft-deleted" in line and f"delete {rid} purge" in line for line in offer.lines)
    assert life.record(rid).status == RequestStatus.SUCCEEDED  # asking changes nothing
    stranger = life.bed.chat.confirm_delete(who=Who("slack", "U0FRED", FRED), token=confirm.value)
    assert "only the person who asked" in stranger.problems[0].message
    forged = life.bed.chat.confirm_delete(who=life.slack(), token=confirm.value[:-4] + "AAAA")
    assert "not valid" in forged.problems[0].message
    assert life.record(rid).status == RequestStatus.SUCCEEDED

    started = life.bed.chat.confirm_delete(who=life.slack(), token=confirm.value)

    assert started.title == "Tearing down mlw-vision-dev has started." and started.public
    assert "I will post in the conversation it was asked for in" in started.lines[0]
    after = life.settled(rid)
    assert after.status == RequestStatus.DELETED and life.cloud.resources == {}
    assert after.teardown is not None and not after.teardown.purge
    again = life.bed.chat.confirm_delete(who=life.slack(), token=confirm.value)
    assert again.title == "Workspace mlw-vision-dev is deleted."
    assert life.record(rid).run == after.run  # a second click starts nothing


def test_a_create_confirmation_cannot_confirm_a_delete(life: Life) -> None:
    rid = life.made()
    [create, _] = life.say("create team=vision env=dev region=westeurope cost-center=CC-1 name=mlw-other").buttons
    refused = life.bed.chat.confirm_delete(who=life.slack(), token=create.value)
    assert not refused.ok and "not valid; run `delete` again" in refused.problems[0].message
    assert life.record(rid).status == RequestStatus.SUCCEEDED


def test_a_delete_confirmed_after_its_asker_left_the_team_is_refused_by_the_lifecycle(life: Life) -> None:
    rid = life.made()
    [confirm, _] = life.say(f"delete {rid}").buttons
    life.bed.remove(ADA, VISION)

    # The chat decides nothing here: Lifecycle.delete asks the authorisation function, now.
    refused = life.bed.chat.confirm_delete(who=life.slack(), token=confirm.value)

    assert not refused.ok and refused.title == "I cannot find that."
    assert f"there is no workspace request with id '{rid}'" in refused.lines[0]
    assert life.record(rid).status == RequestStatus.SUCCEEDED and life.cloud.resources
    life.bed.member(ADA, VISION)
    assert life.bed.chat.confirm_delete(who=life.slack(), token=confirm.value).title.startswith("Tearing down")


def test_deletes_by_people_without_the_right_are_refused_and_reveal_nothing(life: Life) -> None:
    rid = life.made()
    teams = TeamsConversation(message_id="t-1")
    # Sent with confirm=yes, nothing in the chat decides: the lifecycle's authorisation refuses.
    reader = life.bed.chat.handle(who=Who("teams", "pat", PAT), text=f"delete {rid} confirm=yes", reply_to=teams)
    assert reader.title == "You may not do that from chat." and not reader.ok
    hidden = life.bed.chat.handle(who=Who("teams", "fred", FRED), text=f"delete {rid} confirm=yes", reply_to=teams)
    missing = life.bed.chat.handle(who=Who("teams", "fred", FRED), text=f"delete {MISSING} confirm=yes", reply_to=teams)
    assert hidden.title == "I cannot find that." and hidden.text() == missing.text().replace(MISSING, rid)
    # Nor is anyone offered a button they may not use.
    offered = life.say(f"delete {rid}", who=life.slack(PAT))
    assert offered.title == "You may not do that from chat." and offered.buttons == []
    assert (str(PAT.principal), "change", False, "MissingRole", "vision", "delete") in life.bed.audit.decisions
    assert life.record(rid).status == RequestStatus.SUCCEEDED and life.record(rid).run == 1


def test_teams_confirms_a_delete_by_sending_it_again_with_confirm_yes(life: Life) -> None:
    rid = life.made()
    ada = Who("teams", str(ADA.teams_user), ADA)
    offer = life.bed.chat.handle(who=ada, text=f"delete {rid} purge", reply_to=TeamsConversation(message_id="t1"))
    assert offer.title == "Delete mlw-vision-dev?" and offer.buttons == []
    assert f"send `delete {rid} purge confirm=yes`" in offer.lines[-1]
    assert any("purged: their names are free at once" in line for line in offer.lines)
    assert life.record(rid).status == RequestStatus.SUCCEEDED

    done = life.bed.chat.handle(
        who=ada, text=f"delete {rid} purge confirm=yes", reply_to=TeamsConversation(message_id="t2")
    )

    assert done.title.startswith("Tearing down"), done.text()
    after = life.settled(rid)
    assert after.status == RequestStatus.DELETED and after.teardown is not None and after.teardown.purge


def test_a_request_in_flight_is_not_offered_for_deletion(life: Life) -> None:
    gate = threading.Event()
    life.cloud.gates["workspace"] = gate
    rid = life.made(settle=False)
    refused = life.say(f"delete {rid}")
    assert refused.title == "Workspace mlw-vision-dev cannot be torn down now." and refused.buttons == []
    forced = life.say(f"delete {rid} confirm=yes")
    assert forced.title == "That cannot be done to this request now." and "cancel it first" in forced.lines[0]
    gate.set()


def test_the_slack_buttons_of_a_delete_go_through_the_composed_chat(life: Life) -> None:
    rid = life.made()
    chat = life.container.chat  # as composition.py builds it, with the container's lifecycle
    offer = chat.handle(who=life.slack(), text=f"delete {rid}", reply_to=SLACK_HERE)
    [confirm, keep] = offer.buttons
    kept = _interaction(life.container, life.slack(), keep.action, keep.value, SLACK_HERE)
    assert kept.title == "Kept: nothing was deleted."
    assert life.record(rid).status == RequestStatus.SUCCEEDED
    started = _interaction(life.container, life.slack(), confirm.action, confirm.value, SLACK_HERE)
    assert started.title.startswith("Tearing down"), started.text()
    assert life.settled(rid).status == RequestStatus.DELETED


# ----- extend and status ------------------------------------------------------------------------


def test_extend_moves_the_expiry_within_policy(life: Life) -> None:
    rid = life.made()

    moved = life.say(f"extend {rid} 10")

    assert moved.ok and moved.title.startswith("Workspace mlw-vision-dev now expires at ")
    expires = life.record(rid).expires_at
    assert expires is not None
    assert abs((expires - datetime.now(UTC) - timedelta(days=10)).total_seconds()) < 60
    too_far = life.say(f"extend {rid} 120")
    assert not too_far.ok and too_far.title == "The request does not comply with the platform policy."
    assert too_far.problems[0].field == "expires_at" and "at most 90 days" in too_far.problems[0].message
    assert life.record(rid).expires_at == expires
    assert "number of days" in life.say(f"extend {rid} soon").problems[0].message
    assert "above 0" in life.say(f"extend {rid} -3").problems[0].message


def test_extend_is_refused_to_people_without_the_right(life: Life) -> None:
    rid = life.made()
    expires = life.record(rid).expires_at
    assert life.say(f"extend {rid} 5", who=life.slack(PAT)).title == "You may not do that from chat."
    hidden = life.say(f"extend {rid} 5", who=life.slack(FRED))
    assert hidden.title == "I cannot find that." and "fraud" not in hidden.text()
    assert life.record(rid).expires_at == expires


def test_status_shows_the_expiry_and_what_drift_was_found(life: Life) -> None:
    rid = life.made()
    expires = life.record(rid).expires_at
    assert expires is not None
    before = dict(life.say(f"status {rid}").fields)
    assert before["expires"] == f"{expires:%Y-%m-%d %H:%M} UTC" and before["drift"] == "not checked yet"
    life.cloud.changed["compute:cpu-cluster"] = DriftFinding(
        step_id="compute:cpu-cluster",
        kind="compute-cluster",
        resource_id="/x/computes/cpu-cluster",
        drift="changed",
        field="max_nodes",
        expected="4",
        actual="8",
        message="cpu-cluster was resized by hand to 8 nodes",
    )
    life.container.lifecycle.check_one(life.record(rid))

    after = life.say(f"status {rid}")

    assert dict(after.fields)["drift"].startswith("1 finding at ")
    assert "Drift: cpu-cluster was resized by hand to 8 nodes" in after.lines
    assert not life.say(f"status {rid}", who=life.slack(FRED)).ok


# ----- how each run ends ------------------------------------------------------------------------


def test_the_end_of_a_create_says_it_is_ready_with_its_studio_link(life: Life) -> None:
    reply = life.result(life.made())
    assert reply.title == "Workspace mlw-vision-dev is ready." and reply.ok and reply.public
    assert reply.link is not None and reply.link[1].startswith("https://ml.azure.com/home?wsid=")
    assert "expires" in dict(reply.fields)


def test_the_end_of_a_revision_names_it_and_what_it_changed(life: Life) -> None:
    rid = life.made()
    ada = chat_caller(ADA, tenant=life.bed.policy.tenant_id)
    life.container.lifecycle.update(rid, {"tags": {"project": "x"}}, caller=ada, door="slack")
    assert life.settled(rid).status == RequestStatus.SUCCEEDED

    reply = life.result(rid)

    assert reply.title == "Workspace mlw-vision-dev is updated: revision 2." and reply.ok
    assert reply.lines[0].startswith("Changed: ") and "to update" in reply.lines[0]
    assert dict(reply.fields)["revision"] == "2"


def test_a_failed_create_names_the_step_and_the_fix(life: Life) -> None:
    life.cloud.fail["key-vault"] = Fail(
        "the key vault was disallowed by policy 'no-vaults'", "RequestDisallowedByPolicy"
    )
    rid = life.made(settle=False)
    assert life.settled(rid).status == RequestStatus.FAILED

    reply = life.result(rid)

    assert reply.title == "Workspace mlw-vision-dev could not be provisioned." and not reply.ok
    assert "Step `key-vault` failed: the key vault was disallowed by policy 'no-vaults'" in reply.lines[0]
    assert f"python -m cli retry {rid}" in reply.lines[-1]


def test_a_failed_revision_says_what_exists_and_how_to_retry(life: Life) -> None:
    rid = life.made()
    life.cloud.fail["compute:cpu-cluster"] = Fail("the quota is used up", "QuotaExceeded")
    ada = chat_caller(ADA, tenant=life.bed.policy.tenant_id)
    compute = [{**life.record(rid).request.model_dump(mode="json")["compute"][0], "max_nodes": 2}]
    life.container.lifecycle.update(rid, {"compute": compute}, caller=ada, door="slack")
    assert life.settled(rid).status == RequestStatus.FAILED

    reply = life.result(rid)

    assert reply.title == "Workspace mlw-vision-dev could not be updated to revision 2." and not reply.ok
    assert "Step `compute:cpu-cluster` failed: the quota is used up" in reply.lines[0]
    assert "what revision 1 made" in reply.lines[-1] and f"retry {rid}" in reply.lines[-1]


def test_a_failed_teardown_lists_what_remains_and_how_to_go_on(life: Life) -> None:
    rid = life.made()
    life.cloud.fail_delete["workspace"] = Fail("a CanNotDelete lock 'keep' holds it", "ScopeLocked")
    ada = chat_caller(ADA, tenant=life.bed.policy.tenant_id)
    life.container.lifecycle.delete(rid, caller=ada, door="slack")
    assert life.settled(rid).status == RequestStatus.FAILED

    reply = life.result(rid)

    assert reply.title == "Workspace mlw-vision-dev could not be torn down." and not reply.ok
    assert "Step `workspace` failed: a CanNotDelete lock 'keep' holds it" in reply.lines[0]
    assert any(line.startswith("Still there: ") and "workspaces/mlw-vision-dev" in line for line in reply.lines)
    assert f"retry {rid}" in reply.lines[-1] and f"`delete {rid}`" in reply.lines[-1]


def test_a_cancelled_run_says_what_exists_and_offers_retry_or_delete(life: Life) -> None:
    gate = threading.Event()
    life.cloud.gates["workspace"] = gate
    rid = life.made(settle=False)
    poll(
        lambda: (s := life.container.store.get_step(rid, "workspace")) is not None and s.attempt >= 2,
        what="the workspace step to wait at its gate",
    )
    ada = chat_caller(ADA, tenant=life.bed.policy.tenant_id)
    life.container.lifecycle.cancel(rid, caller=ada, door="slack")
    assert life.settled(rid).status == RequestStatus.CANCELLED
    gate.set()

    reply = life.result(rid)

    assert reply.title == "Workspace mlw-vision-dev: the provisioning was cancelled." and not reply.ok
    assert reply.lines[0].startswith("Done before it stopped (") and "storage" in reply.lines[0]
    assert "workspace" in reply.lines[1] and reply.lines[1].startswith("Not done: ")
    assert f"retry {rid}" in reply.lines[-1] and f"`delete {rid}`" in reply.lines[-1]


def test_the_end_of_a_teardown_names_what_soft_delete_holds(life: Life) -> None:
    rid = life.made()
    ada = chat_caller(ADA, tenant=life.bed.policy.tenant_id)
    life.container.lifecycle.delete(rid, caller=ada, door="slack")
    after = life.settled(rid)
    assert after.status == RequestStatus.DELETED and after.teardown is not None

    reply = life.result(rid)

    assert reply.title == "Workspace mlw-vision-dev is deleted." and reply.ok and reply.public
    assert reply.lines[0] == f"{len(after.teardown.deleted)} resources deleted."
    for held in after.teardown.soft_deleted:
        assert any(f"`{held.name}` ({held.kind}) is held by soft-delete" in line for line in reply.lines)
    assert "expires" not in dict(reply.fields)


def test_the_expiry_reminder_says_when_and_how_to_extend(life: Life) -> None:
    rid = life.made()
    assert life.say(f"extend {rid} 2").ok  # inside the three days before which the requester is reminded
    store = life.container.store
    told = life.record(rid)
    # Nothing delivers notifications here: the result is still to be told, and a reminder waits for it.
    assert told.notification is not None and not told.notification.done
    assert life.container.lifecycle.expire_due() == 0
    store.update_request(
        told.model_copy(update={"notification": told.notification.model_copy(update={"status": "delivered"})})
    )
    assert life.container.lifecycle.expire_due() == 1  # the lifecycle timer's tick
    record = life.record(rid)
    assert record.notification is not None and record.notification.about == "expiry"

    reply = life.result(rid)

    assert record.expires_at is not None
    assert reply.title == f"Workspace mlw-vision-dev expires at {record.expires_at:%Y-%m-%d %H:%M} UTC."
    assert reply.lines[0].startswith("That is in 2.0 days")
    assert f"`extend {rid} <days>` here (at most 90 days from now)" in reply.lines[1]
    # Once told, `status` shows the request as it stands, not the reminder again.
    assert life.say(f"status {rid}").title == "Workspace mlw-vision-dev is ready."
