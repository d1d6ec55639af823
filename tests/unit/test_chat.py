"""Chat doors without a network: signatures and replay guards (Slack's published example, Teams' HMAC and
activity window), parsing, and who may ask: every refusal here would pass if its check were removed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from pydantic import ValidationError

from adapters import teams
from adapters.slack import SlackVerifier, message
from adapters.sqlite_store import SqliteStore
from composition import Container
from engine.authz import Act, Authorizer, Decision
from engine.chat import USAGE, Chat, Reply, SubmissionLimit, Who, parse_command
from models.errors import InvalidInputError
from models.identity import AppRole, Caller
from models.policy import ChatUser, Policy, TeamAccess
from models.records import SlackConversation, TeamsConversation
from models.request import parse_request
from models.settings import Settings
from tests.fakes import FakeCloud

# Slack's published example (docs: "Verifying requests from Slack").
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TIMESTAMP = "1531420618"
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
VISION = "0a1b2c3d-0000-4000-8000-00000000a001"
FRAUD = "0a1b2c3d-0000-4000-8000-00000000f002"
ADA = ChatUser(
    slack_user="U2CERLKJA",
    teams_user=UUID("6a1c2e3f-4b5d-4e6f-8a7b-9c0d1e2f3a4b"),
    principal=UUID("0c9a3f5e-2b1d-4e6f-8a7b-9c0d1e2f3a4b"),
    name="Ada",
)
FRED = ChatUser(slack_user="U0FRED", principal=UUID("0c9a3f5e-2b1d-4e6f-8a7b-00000000f4ed"), name="Fred")
PAT = ChatUser(
    slack_user="U0PAT",
    principal=UUID("0c9a3f5e-2b1d-4e6f-8a7b-000000000fa7"),
    name="Platform",
    roles=[AppRole.READ_ALL],
)


def _headers(timestamp: str = SLACK_TIMESTAMP, signature: str = SLACK_SIGNATURE) -> dict[str, str]:
    return {"x-slack-request-timestamp": timestamp, "x-slack-signature": signature}


def test_slacks_published_example_verifies_and_is_refused_when_replayed() -> None:
    store = SqliteStore(":memory:")
    verifier = SlackVerifier(SLACK_SECRET, clock=lambda: float(SLACK_TIMESTAMP) + 30)
    assert verifier.refusal(SLACK_BODY, _headers(), replays=store) is None
    assert "already received" in (verifier.refusal(SLACK_BODY, _headers(), replays=store) or "")


def test_a_signed_slack_request_replayed_after_a_restart_is_refused(tmp_path: Path) -> None:
    clock = lambda: float(SLACK_TIMESTAMP) + 30  # noqa: E731
    before = SlackVerifier(SLACK_SECRET, clock=clock)
    assert before.refusal(SLACK_BODY, _headers(), replays=SqliteStore(tmp_path / "state.db")) is None
    # Another process (a restart, or a second instance) over the same store.
    after = SlackVerifier(SLACK_SECRET, clock=lambda: float(SLACK_TIMESTAMP) + 290)
    again = after.refusal(SLACK_BODY, _headers(), replays=SqliteStore(tmp_path / "state.db"))
    assert again is not None and "already received" in again


def test_forged_slack_requests_are_not_remembered(tmp_path: Path) -> None:
    store = SqliteStore(":memory:")
    verifier = SlackVerifier(SLACK_SECRET, clock=lambda: float(SLACK_TIMESTAMP))
    forged = _headers(signature=SLACK_SIGNATURE[:-1] + "0")
    assert "does not match" in (verifier.refusal(SLACK_BODY, forged, replays=store) or "")
    assert verifier.refusal(SLACK_BODY, _headers(), replays=store) is None


@pytest.mark.parametrize(
    ("body", "headers", "why"),
    [
        (SLACK_BODY.replace(b"roadrunner", b"wile-e"), _headers(), "does not match"),
        (SLACK_BODY, _headers(signature=SLACK_SIGNATURE[:-1] + "0"), "does not match"),
        (SLACK_BODY, {}, "not signed"),
        (SLACK_BODY, _headers(timestamp="yesterday"), "not a number"),
    ],
)
def test_forged_slack_requests_are_refused(body: bytes, headers: dict[str, str], why: str) -> None:
    verifier = SlackVerifier(SLACK_SECRET, clock=lambda: float(SLACK_TIMESTAMP))
    assert why in (verifier.refusal(body, headers, replays=SqliteStore(":memory:")) or "")


def test_a_stale_slack_request_is_refused_even_with_a_good_signature() -> None:
    verifier = SlackVerifier(SLACK_SECRET, clock=lambda: float(SLACK_TIMESTAMP) + 301)
    assert "older than five minutes" in (
        verifier.refusal(SLACK_BODY, _headers(), replays=SqliteStore(":memory:")) or ""
    )


def test_teams_hmac_valid_and_invalid() -> None:
    secret = base64.b64encode(b"teams-shared-secret-0123456789ab").decode()
    body = b'{"type":"message","text":"<at>Vending</at> help"}'
    good = base64.b64encode(hmac.new(base64.b64decode(secret), body, hashlib.sha256).digest()).decode()
    assert teams.verify(secret, body, f"HMAC {good}") is None
    assert "does not match" in (teams.verify(secret, body + b" ", f"HMAC {good}") or "")
    assert "not signed" in (teams.verify(secret, body, None) or "")
    assert "not signed" in (teams.verify(secret, body, f"Bearer {good}") or "")
    assert "not base64" in (teams.verify(secret, body, "HMAC ***") or "")


TEAMS_SECRET = base64.b64encode(b"teams-shared-secret-0123456789ab").decode()
SENT = datetime(2026, 1, 1, 9, 18, 44, tzinfo=UTC)


def _activity(
    activity_id: str = "1767259124211", *, at: str = "2026-01-01T09:18:44.2114686Z", thread: str = "19:a@thread.skype"
) -> tuple[bytes, str]:
    body = json.dumps(
        {
            "type": "message",
            "id": activity_id,
            "timestamp": at,
            "localTimestamp": "2026-01-01T10:18:44.2114686+01:00",
            "channelId": "msteams",
            "serviceUrl": "https://smba.trafficmanager.net/emea/",
            "from": {"id": "29:1abc", "name": "Ada", "aadObjectId": str(ADA.teams_user)},
            "conversation": {"isGroup": True, "conversationType": "channel", "id": thread},
            "text": "<at>Vending</at> help",
        }
    ).encode()
    mac = base64.b64encode(hmac.new(base64.b64decode(TEAMS_SECRET), body, hashlib.sha256).digest()).decode()
    return body, f"HMAC {mac}"


def _teams_verifier(seconds_after: float = 2.0) -> teams.TeamsVerifier:
    return teams.TeamsVerifier(TEAMS_SECRET, clock=lambda: SENT.timestamp() + seconds_after)


def test_a_fresh_teams_activity_passes_once_and_its_replay_after_a_restart_is_refused(tmp_path: Path) -> None:
    body, auth = _activity()
    assert _teams_verifier().refusal(body, auth, replays=SqliteStore(tmp_path / "state.db")) is None
    again = _teams_verifier(200).refusal(body, auth, replays=SqliteStore(tmp_path / "state.db"))
    assert again is not None and "already received" in again
    # The same id in another conversation is another activity.
    other, other_auth = _activity(thread="19:b@thread.skype")
    assert _teams_verifier().refusal(other, other_auth, replays=SqliteStore(tmp_path / "state.db")) is None


def test_a_stale_or_future_teams_activity_is_refused_even_when_signed() -> None:
    body, auth = _activity()
    stale = _teams_verifier(301).refusal(body, auth, replays=SqliteStore(":memory:"))
    assert stale is not None and "older than five minutes" in stale
    ahead = _teams_verifier(-301).refusal(body, auth, replays=SqliteStore(":memory:"))
    assert ahead is not None and "ahead" in ahead


@pytest.mark.parametrize(
    ("activity_id", "at", "why"),
    [
        ("", "2026-01-01T09:18:44Z", "no id"),
        ("1", "yesterday", "no UTC timestamp"),
        ("1", "2026-01-01T09:18:44", "no UTC timestamp"),  # no zone: the age cannot be told
    ],
)
def test_a_teams_activity_without_an_id_or_a_zoned_timestamp_is_refused(activity_id: str, at: str, why: str) -> None:
    body, auth = _activity(activity_id, at=at)
    assert why in (_teams_verifier().refusal(body, auth, replays=SqliteStore(":memory:")) or "")


def test_a_forged_teams_activity_is_refused_before_it_is_read() -> None:
    body, auth = _activity()
    assert "does not match" in (_teams_verifier().refusal(body + b" ", auth, replays=SqliteStore(":memory:")) or "")


def test_teams_text_loses_the_mention_and_markup() -> None:
    activity = {"text": "<at>Vending</at>&nbsp;create team=vision <b>env=dev</b><br>region=westeurope"}
    assert teams.command_text(activity) == "create team=vision env=dev region=westeurope"


def test_commands_take_arguments_in_any_order_with_quotes() -> None:
    assert parse_command('create region=westeurope team=vision cost-center="CC 1042"') == (
        "create",
        {"region": "westeurope", "team": "vision", "cost-center": "CC 1042"},
        [],
    )
    assert parse_command("status 01J0ABC") == ("status", {}, ["01J0ABC"])
    assert parse_command("") == ("help", {}, [])
    with pytest.raises(InvalidInputError) as twice:
        parse_command("create team=a team=b")
    assert "given twice" in twice.value.problems[0].message
    with pytest.raises(InvalidInputError) as unclosed:
        parse_command('create team="vision')
    assert "close your quotes" in unclosed.value.problems[0].message


def test_a_chat_user_names_no_teams_of_its_own() -> None:
    with pytest.raises(ValidationError, match="member_of is no longer read"):
        ChatUser.model_validate({"slack_user": "U1", "principal": str(ADA.principal), "member_of": ["vision"]})
    assert ADA.roles == [AppRole.REQUEST]


@dataclass
class Directory:
    """The membership port as Microsoft Graph answers it: who is in which group, changeable by a test."""

    members: dict[str, set[str]] = field(default_factory=dict)

    def member_groups(self, *, principal: str, groups: list[str]) -> frozenset[str]:
        return frozenset(g for g in groups if g in self.members.get(principal, set()))


@dataclass
class Audit:
    """Records chat's decisions as the audit events would."""

    decisions: list[tuple[str, str, bool, str, str | None, str]] = field(default_factory=list)

    def __call__(
        self,
        *,
        caller: Caller,
        decision: Decision,
        act: Act,
        team: str | None,
        door: str,
        command: str,
        request_id: str | None,
    ) -> None:
        self.decisions.append((caller.oid, act.value, decision.allowed, decision.rule, team, command))


@dataclass
class Bed:
    container: Container
    policy: Policy
    directory: Directory
    audit: Audit
    chat: Chat

    def who(self, user: ChatUser | None = ADA, slack: str | None = None) -> Who:
        return Who("slack", slack or (user.slack_user if user else "U999") or "", user)

    def member(self, user: ChatUser, group: str) -> None:
        self.directory.members.setdefault(str(user.principal), set()).add(group)

    def remove(self, user: ChatUser, group: str) -> None:
        self.directory.members[str(user.principal)].discard(group)


def make_chat(container: Container, policy: Policy, **options: Any) -> Chat:
    return Chat(
        intake=container.intake,
        lifecycle=container.lifecycle,
        store=container.store,
        policy=lambda: policy,
        signing_key=b"chat-test-key",
        studio_url=container.settings.studio_url,
        **options,
    )


@pytest.fixture
def bed(settings: Settings) -> Bed:
    container = Container(settings, cloud=FakeCloud())
    policy = container.policy.model_copy(
        update={
            "chat_users": [ADA, FRED, PAT],
            "teams": {"vision": TeamAccess(groups=[UUID(VISION)]), "fraud": TeamAccess(groups=[UUID(FRAUD)])},
        }
    )
    directory, audit = Directory(), Audit()
    # Intake decides again with the same function: the container's authoriser sees the same directory.
    container.swap(policy=policy, membership=directory, authorizer=Authorizer(policy=policy, membership=directory))
    chat = make_chat(container, policy, authorizer=lambda: Authorizer(policy=policy, membership=directory), audit=audit)
    made = Bed(container, policy, directory, audit, chat)
    made.member(ADA, VISION)
    made.member(FRED, FRAUD)
    return made


SLACK_HERE = SlackConversation(user="U0ADA", channel="C1")

ASK = "create team=vision env=dev region=westeurope profile=cpu-small cost-center=CC-1"


def test_mistakes_get_the_usage_and_the_same_problems_as_the_rest_api(bed: Bed) -> None:
    reply = bed.chat.handle(
        who=bed.who(), text="create team=vision env=staging region=mars cost-center=CC-1", reply_to=SLACK_HERE
    )
    assert not reply.ok and reply.usage
    with pytest.raises(InvalidInputError) as rest:
        parse_request({"team": "vision", "environment": "staging", "region": "mars", "tags": {"cost-center": "CC-1"}})
    assert {(p.field, p.message) for p in rest.value.problems} <= {(p.field, p.message) for p in reply.problems}
    unknown = bed.chat.handle(who=bed.who(), text="create team=vision colour=blue", reply_to=SLACK_HERE)
    assert any("'colour' is not an argument" in p.message for p in unknown.problems)
    nonsense = bed.chat.handle(who=bed.who(), text="destroy everything", reply_to=SLACK_HERE)
    assert "'destroy' is not a command" in nonsense.problems[0].message
    assert "Traceback" not in str(message(nonsense))


@pytest.mark.parametrize("command", [ASK, "plan team=vision env=dev region=westeurope", "list", "status 01J0ABC"])
def test_strangers_are_told_to_ask_their_platform_team_for_every_command(bed: Bed, command: str) -> None:
    stranger = bed.chat.handle(who=bed.who(None, slack="U999"), text=command, reply_to=SLACK_HERE)
    assert stranger.title == "I do not know you yet." and not stranger.ok
    assert "chat_users" in stranger.problems[0].message and "U999" in stranger.problems[0].message


def test_another_teams_plan_is_refused_by_the_teams_groups_and_recorded(bed: Bed) -> None:
    other = bed.chat.handle(who=bed.who(), text="plan team=fraud env=dev region=westeurope", reply_to=SLACK_HERE)
    assert other.title == "That team is not yours." and not other.ok
    assert "you are not a member of team 'fraud'" in other.lines[0] and "(vision)" in other.lines[0]
    assert "Entra groups" in other.lines[1]
    assert (str(ADA.principal), "request", False, "NotTeamMember", "fraud", "plan") in bed.audit.decisions
    # The same person, once in the team's group, may.
    bed.member(ADA, FRAUD)
    mine = bed.chat.handle(
        who=bed.who(), text="plan team=fraud env=dev region=westeurope cost-center=CC-1", reply_to=SLACK_HERE
    )
    assert mine.ok and mine.title.startswith("Plan for mlw-fraud-dev")
    assert (str(ADA.principal), "request", True, "TeamMember", "fraud", "plan") in bed.audit.decisions


def test_a_team_the_policy_does_not_know_and_a_missing_role_are_refused(bed: Bed) -> None:
    unknown = bed.chat.handle(who=bed.who(), text="plan team=nobody env=dev region=westeurope", reply_to=SLACK_HERE)
    assert unknown.title == "That team is not known here." and "policy's teams" in unknown.lines[0]
    reader = bed.chat.handle(who=bed.who(PAT), text="plan team=vision env=dev region=westeurope", reply_to=SLACK_HERE)
    assert reader.title == "You may not do that from chat." and AppRole.REQUEST.value in reader.lines[0]


def test_a_plan_is_confirmed_only_by_its_asker_and_only_once(bed: Bed) -> None:
    planned = bed.chat.handle(who=bed.who(), text=ASK, reply_to=SLACK_HERE)
    [confirm, cancel] = planned.buttons
    assert planned.ok and confirm.action == "confirm_create" and cancel.action == "cancel"
    stranger = Who("slack", "U0FRED", FRED)
    refused = bed.chat.confirm(who=stranger, token=confirm.value, reply_to=SLACK_HERE)
    assert "only the person who asked" in refused.problems[0].message
    forged = bed.chat.confirm(who=bed.who(), token=confirm.value[:-4] + "AAAA", reply_to=SLACK_HERE)
    assert "not valid" in forged.problems[0].message
    remapped = Who("slack", "U2CERLKJA", FRED.model_copy(update={"slack_user": "U2CERLKJA"}))
    moved = bed.chat.confirm(who=remapped, token=confirm.value, reply_to=SLACK_HERE)
    assert "who you act as has changed" in moved.problems[0].message
    first = bed.chat.confirm(who=bed.who(), token=confirm.value, reply_to=SLACK_HERE)
    again = bed.chat.confirm(who=bed.who(), token=confirm.value, reply_to=SLACK_HERE)
    assert first.title.startswith("Provisioning mlw-vision-dev has started")
    assert again.title.startswith("This was already submitted as")
    assert len(bed.container.store.list_requests(team="vision").items) == 1
    record = bed.container.store.list_requests(team="vision").items[0]
    assert record.requester == str(ADA.principal) and record.reply_to == SLACK_HERE
    assert record.request.model_dump(mode="json")["owners"][0]["object_id"] == str(ADA.principal)


def test_a_sealed_confirmation_creates_nothing_after_its_asker_left_the_team(bed: Bed) -> None:
    [confirm, _] = bed.chat.handle(who=bed.who(), text=ASK, reply_to=SLACK_HERE).buttons
    bed.remove(ADA, VISION)
    refused = bed.chat.confirm(who=bed.who(), token=confirm.value, reply_to=SLACK_HERE)
    assert refused.title == "That team is not yours." and not refused.ok
    assert bed.container.store.list_requests(team="vision").items == []
    assert (str(ADA.principal), "request", False, "NotTeamMember", "vision", "confirm") in bed.audit.decisions
    bed.member(ADA, VISION)
    assert bed.chat.confirm(who=bed.who(), token=confirm.value, reply_to=SLACK_HERE).title.startswith("Provisioning")


def test_a_teams_confirmation_is_decided_again_when_it_is_sent(bed: Bed) -> None:
    teams_ada = Who("teams", str(ADA.teams_user), ADA)
    assert bed.chat.handle(who=teams_ada, text=ASK, reply_to=SLACK_HERE).title == "Create mlw-vision-dev?"
    bed.remove(ADA, VISION)
    refused = bed.chat.handle(who=teams_ada, text=ASK + " confirm=yes", reply_to=TeamsConversation(message_id="m2"))
    assert refused.title == "That team is not yours."
    assert bed.container.store.list_requests(team="vision").items == []


def _submit(bed: Bed, user: ChatUser, team: str, message_id: str, *, name: str = "") -> str:
    reply = bed.chat.handle(
        who=Who("teams", str(user.principal), user),
        text=f"create team={team} env=dev region=westeurope profile=cpu-small cost-center=CC-1 {name} confirm=yes",
        reply_to=TeamsConversation(message_id=message_id),
    )
    assert reply.title.startswith("Provisioning"), reply.text()
    return reply.buttons[0].value


def test_list_and_status_show_only_the_askers_teams(bed: Bed) -> None:
    mine = _submit(bed, ADA, "vision", "m1")
    theirs = _submit(bed, FRED, "fraud", "m2")
    listed = bed.chat.handle(who=bed.who(), text="list", reply_to=SLACK_HERE)
    assert mine in listed.text() and theirs not in listed.text() and listed.title == "Newest requests of vision"
    other = bed.chat.handle(who=bed.who(), text="list fraud", reply_to=SLACK_HERE)
    assert not other.ok and theirs not in other.text() and "your own teams' requests (vision)" in other.lines[0]
    assert (str(ADA.principal), "read", False, "NotTeamMember", "fraud", "list") in bed.audit.decisions
    # Another team's request is answered exactly as one that does not exist, by command and by button.
    hidden = bed.chat.handle(who=bed.who(), text=f"status {theirs}", reply_to=SLACK_HERE)
    missing = bed.chat.handle(who=bed.who(), text="status 01J0NOTHERE0000000000000000", reply_to=SLACK_HERE)
    assert not hidden.ok and hidden.text() == missing.text().replace("01J0NOTHERE0000000000000000", theirs)
    button = bed.chat.status(who=bed.who(), request_id=theirs)
    assert not button.ok and "there is no request" in button.text() and "fraud" not in button.text()
    assert bed.chat.status(who=bed.who(), request_id=mine).fields[0] == ("team", "vision")
    assert (str(ADA.principal), "read", False, "NotTeamMember", "fraud", "status") in bed.audit.decisions
    # The platform team reads every team (Workspaces.ReadAll); someone in no team is told how to join one.
    everything = bed.chat.handle(who=bed.who(PAT), text="list", reply_to=SLACK_HERE)
    assert mine in everything.text() and theirs in everything.text()
    assert bed.chat.status(who=bed.who(PAT), request_id=theirs).ok
    bed.remove(ADA, VISION)
    alone = bed.chat.handle(who=bed.who(), text="list", reply_to=SLACK_HERE)
    assert alone.title == "You belong to no team yet." and mine not in alone.text()
    assert not bed.chat.status(who=bed.who(), request_id=mine).ok


def test_submissions_are_limited_per_person_and_a_repeat_takes_nothing(bed: Bed) -> None:
    asked: list[str] = []

    def one_only(caller: Caller) -> float | None:
        asked.append(caller.oid)
        return None if len(asked) == 1 else 42.2

    limited: SubmissionLimit = one_only
    chat = make_chat(
        bed.container,
        bed.policy,
        authorizer=lambda: Authorizer(policy=bed.policy, membership=bed.directory),
        submissions=limited,
        audit=bed.audit,
    )
    [confirm, _] = chat.handle(who=bed.who(), text=ASK, reply_to=SLACK_HERE).buttons
    assert chat.confirm(who=bed.who(), token=confirm.value, reply_to=SLACK_HERE).title.startswith("Provisioning")
    assert chat.confirm(who=bed.who(), token=confirm.value, reply_to=SLACK_HERE).title.startswith("This was already")
    assert asked == [str(ADA.principal)]  # the repeat found the first request without taking
    other = ASK.replace("CC-1", "CC-2") + " name=mlw-vision-two"
    refused = chat.handle(
        who=Who("teams", "t", ADA), text=other + " confirm=yes", reply_to=TeamsConversation(message_id="x")
    )
    assert refused.title == "You have asked for many workspaces in a short time." and "43 s" in refused.lines[0]
    assert len(bed.container.store.list_requests(team="vision").items) == 1
    assert (str(ADA.principal), "request", False, "SubmissionRateLimit", "vision", "create") in bed.audit.decisions


def test_the_default_submission_limit_is_kept_in_the_store(bed: Bed) -> None:
    for i in range(10):
        _submit(bed, ADA, "vision", f"m{i}", name=f"name=mlw-vision-{i}")
    refused = bed.chat.handle(
        who=Who("teams", "t", ADA),
        text=ASK + " name=mlw-vision-x confirm=yes",
        reply_to=TeamsConversation(message_id="m10"),
    )
    assert refused.title == "You have asked for many workspaces in a short time."
    # Kept in the store under the principal's bucket: every instance and every door sees the same allowance.
    assert bed.container.store.take(f"submit:{ADA.principal}", now=datetime.now(UTC), limit=10, window_s=600)
    assert _submit(bed, FRED, "fraud", "f1")


def test_without_an_authoriser_chat_users_act_for_no_team(bed: Bed) -> None:
    unwired = make_chat(bed.container, bed.policy)
    refused = unwired.handle(who=bed.who(), text="plan team=vision env=dev region=westeurope", reply_to=SLACK_HERE)
    assert refused.title == "That team is not yours."
    assert unwired.handle(who=bed.who(), text="list", reply_to=SLACK_HERE).title == "You belong to no team yet."


def test_replies_render_for_both_chats() -> None:
    reply = Reply(
        "Workspace mlw-x is ready.", lines=["All 9 steps succeeded."], link=("Open", "https://ml.azure.com/x")
    )
    blocks = message(reply)["blocks"]
    assert blocks[-1]["elements"][0]["url"] == "https://ml.azure.com/x"
    card = teams.card(reply)
    assert card["type"] == "AdaptiveCard" and card["actions"][0] == {
        "type": "Action.OpenUrl",
        "title": "Open",
        "url": "https://ml.azure.com/x",
    }


def test_the_lifecycle_verbs_are_in_the_usage_and_need_one_request_id(bed: Bed) -> None:
    usage = bed.chat.handle(who=bed.who(), text="help", reply_to=SLACK_HERE)
    assert usage.usage
    assert "`delete <request id> [purge]`" in USAGE and "`extend <request id> <days>`" in USAGE
    none = bed.chat.handle(who=bed.who(), text="delete", reply_to=SLACK_HERE)
    assert not none.ok and "give one request id: `delete 01J… [purge]`" in none.problems[0].message
    extra = bed.chat.handle(who=bed.who(), text="delete 01J0ABC everything", reply_to=SLACK_HERE)
    assert "'everything' is not an argument of delete" in extra.problems[0].message
    days = bed.chat.handle(who=bed.who(), text="extend 01J0ABC", reply_to=SLACK_HERE)
    assert "number of days" in days.problems[0].message
    # A stranger is told to ask the platform team before anything is looked up.
    stranger = bed.chat.handle(who=bed.who(None, slack="U999"), text="delete 01J0ABC", reply_to=SLACK_HERE)
    assert stranger.title == "I do not know you yet."
