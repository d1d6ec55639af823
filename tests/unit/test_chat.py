"""Chat doors without a network: signatures (Slack's published example, Teams' HMAC), parsing, who may ask."""

from __future__ import annotations

import base64
import hashlib
import hmac
from uuid import UUID

import pytest

from adapters import teams
from adapters.slack import SlackVerifier, message
from composition import Container
from engine.chat import Reply, Who, parse_command
from models.errors import InvalidInputError
from models.policy import ChatUser
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
ADA = ChatUser(
    slack_user="U2CERLKJA",
    teams_user=UUID("6a1c2e3f-4b5d-4e6f-8a7b-9c0d1e2f3a4b"),
    principal=UUID("0c9a3f5e-2b1d-4e6f-8a7b-9c0d1e2f3a4b"),
    name="Ada",
    member_of=["vision"],
)


def _headers(timestamp: str = SLACK_TIMESTAMP, signature: str = SLACK_SIGNATURE) -> dict[str, str]:
    return {"x-slack-request-timestamp": timestamp, "x-slack-signature": signature}


def test_slacks_published_example_verifies_and_is_refused_when_replayed() -> None:
    verifier = SlackVerifier(SLACK_SECRET, clock=lambda: float(SLACK_TIMESTAMP) + 30)
    assert verifier.refusal(SLACK_BODY, _headers()) is None
    assert "already received" in (verifier.refusal(SLACK_BODY, _headers()) or "")


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
    assert why in (verifier.refusal(body, headers) or "")


def test_a_stale_slack_request_is_refused_even_with_a_good_signature() -> None:
    verifier = SlackVerifier(SLACK_SECRET, clock=lambda: float(SLACK_TIMESTAMP) + 301)
    assert "older than five minutes" in (verifier.refusal(SLACK_BODY, _headers()) or "")


def test_teams_hmac_valid_and_invalid() -> None:
    secret = base64.b64encode(b"teams-shared-secret-0123456789ab").decode()
    body = b'{"type":"message","text":"<at>Vending</at> help"}'
    good = base64.b64encode(hmac.new(base64.b64decode(secret), body, hashlib.sha256).digest()).decode()
    assert teams.verify(secret, body, f"HMAC {good}") is None
    assert "does not match" in (teams.verify(secret, body + b" ", f"HMAC {good}") or "")
    assert "not signed" in (teams.verify(secret, body, None) or "")
    assert "not signed" in (teams.verify(secret, body, f"Bearer {good}") or "")
    assert "not base64" in (teams.verify(secret, body, "HMAC ***") or "")


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


@pytest.fixture
def chat(settings: Settings) -> Container:
    container = Container(settings, cloud=FakeCloud())
    container.swap(policy=container.policy.model_copy(update={"chat_users": [ADA]}))
    return container


def _who(container: Container, user: str = "U2CERLKJA") -> Who:
    return Who("slack", user, container.policy.chat_user(slack=user))


def test_mistakes_get_the_usage_and_the_same_problems_as_the_rest_api(chat: Container) -> None:
    reply = chat.chat.handle(
        who=_who(chat), text="create team=vision env=staging region=mars cost-center=CC-1", reply_to={}
    )
    assert not reply.ok and reply.usage
    with pytest.raises(InvalidInputError) as rest:
        parse_request({"team": "vision", "environment": "staging", "region": "mars", "tags": {"cost-center": "CC-1"}})
    assert {(p.field, p.message) for p in rest.value.problems} <= {(p.field, p.message) for p in reply.problems}
    unknown = chat.chat.handle(who=_who(chat), text="create team=vision colour=blue", reply_to={})
    assert any("'colour' is not an argument" in p.message for p in unknown.problems)
    nonsense = chat.chat.handle(who=_who(chat), text="destroy everything", reply_to={})
    assert "'destroy' is not a command" in nonsense.problems[0].message
    assert "Traceback" not in str(message(nonsense))


def test_strangers_and_other_teams_are_told_plainly(chat: Container) -> None:
    stranger = chat.chat.handle(
        who=_who(chat, "U999"), text="create team=vision env=dev region=westeurope", reply_to={}
    )
    assert stranger.title == "I cannot take requests from you yet." and "chat_users" in stranger.problems[0].message
    other = chat.chat.handle(who=_who(chat), text="plan team=fraud env=dev region=westeurope", reply_to={})
    assert other.title == "That team is not yours."
    assert other.problems[0].message == "you are not a member of team 'fraud'; you may request for: vision."


def test_a_plan_is_confirmed_only_by_its_asker_and_only_once(chat: Container) -> None:
    ask = "create team=vision env=dev region=westeurope profile=cpu-small cost-center=CC-1"
    planned = chat.chat.handle(who=_who(chat), text=ask, reply_to={})
    [confirm, cancel] = planned.buttons
    assert planned.ok and confirm.action == "confirm_create" and cancel.action == "cancel"
    stranger = Who("slack", "U999", ADA.model_copy(update={"slack_user": "U999"}))
    refused = chat.chat.confirm(who=stranger, token=confirm.value, reply_to={})
    assert "only the person who asked" in refused.problems[0].message
    forged = chat.chat.confirm(who=_who(chat), token=confirm.value[:-4] + "AAAA", reply_to={})
    assert "not valid" in forged.problems[0].message
    first = chat.chat.confirm(who=_who(chat), token=confirm.value, reply_to={"kind": "slack"})
    again = chat.chat.confirm(who=_who(chat), token=confirm.value, reply_to={"kind": "slack"})
    assert first.title.startswith("Provisioning mlw-vision-dev has started")
    assert again.title.startswith("This was already submitted as")
    assert len(chat.store.list_requests(team="vision").items) == 1
    record = chat.store.list_requests(team="vision").items[0]
    assert record.requester == "slack:U2CERLKJA" and record.reply_to == {"kind": "slack"}
    assert record.request["owners"][0]["object_id"] == str(ADA.principal)


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
