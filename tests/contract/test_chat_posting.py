"""Posting results to chats, against local receivers: response_url while valid, then the Slack Web API;
Teams Workflows; and how their refusals are translated."""

from __future__ import annotations

import time

import pytest

from adapters.slack import SlackPoster
from adapters.teams import TeamsPoster
from engine.chat import Reply
from models.errors import PermanentError, TransientError
from models.records import SlackConversation, TeamsConversation
from tests.capture import capture_server

REPLY = Reply("Workspace mlw-x is ready.", link=("Open in Azure ML Studio", "https://ml.azure.com/home?wsid=x"))


def test_slack_uses_the_response_url_while_it_is_valid_then_the_web_api() -> None:
    with capture_server() as slack:
        slack.reply = b'{"ok": true, "ts": "1.2"}'
        poster = SlackPoster(bot_token="xoxb-test", api_url=f"{slack.url}/api/")
        reply_to = SlackConversation(response_url=f"{slack.url}/respond", channel="C1", at=time.time())
        poster.post(reply_to, REPLY, "01A:succeeded")
        old = reply_to.model_copy(update={"at": time.time() - 3600})  # response_url lives 30 minutes
        poster.post(old, REPLY, "01A:succeeded")
        slack.statuses = [404]  # used up before its time
        poster.post(reply_to, REPLY, "01A:succeeded")
    paths = [r["path"] for r in slack.received]
    assert paths == ["/respond", "/api/chat.postMessage", "/respond", "/api/chat.postMessage"]
    posted = slack.received[1]
    assert posted["headers"]["Authorization"] == "Bearer xoxb-test"
    assert posted["json"]["channel"] == "C1" and "mlw-x is ready" in posted["json"]["text"]
    assert posted["json"]["metadata"]["event_payload"] == {"delivery_id": "01A:succeeded"}


def test_slack_refusals_are_transient_or_permanent_with_what_to_do() -> None:
    with capture_server() as slack:
        poster = SlackPoster(bot_token="xoxb-test", api_url=f"{slack.url}/api/")
        reply_to = SlackConversation(channel="C1", at=0)
        slack.reply = b'{"ok": false, "error": "not_in_channel"}'
        with pytest.raises(PermanentError, match="invite the app"):
            poster.post(reply_to, REPLY, "d")
        slack.reply = b'{"ok": false, "error": "ratelimited"}'
        slack.statuses = [429]
        with pytest.raises(TransientError):
            poster.post(reply_to, REPLY, "d")
    with pytest.raises(PermanentError, match="SLACK_BOT_TOKEN"):
        SlackPoster(bot_token=None).post(SlackConversation(channel="C1", at=0), REPLY, "d")


def test_teams_workflows_gets_an_adaptive_card_and_refusals_are_translated() -> None:
    with capture_server() as teams:
        poster = TeamsPoster(workflows_url=f"{teams.url}/workflow")
        poster.post(TeamsConversation(), REPLY, "01A:succeeded")
        teams.statuses = [503, 400]
        with pytest.raises(TransientError):
            poster.post(TeamsConversation(), REPLY, "d")
        with pytest.raises(PermanentError, match="TEAMS_WORKFLOWS_URL"):
            poster.post(TeamsConversation(), REPLY, "d")
    first = teams.received[0]
    assert first["headers"]["X-Vending-Delivery"] == "01A:succeeded"
    attachment = first["json"]["attachments"][0]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["content"]["actions"][0]["url"] == "https://ml.azure.com/home?wsid=x"
    with pytest.raises(PermanentError, match="TEAMS_WORKFLOWS_URL"):
        TeamsPoster(workflows_url=None).post(TeamsConversation(), REPLY, "d")
