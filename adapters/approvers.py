"""Where approvers are asked: the approvers' Slack channel and Teams channel, one `ApprovalAnnouncer`.

Each platform's poster renders the approval message (the request, the rules it met, its estimated
cost, Approve and Deny) and updates it once decided; this composite sends a waiting request to every
channel its policy names and updates what was posted.
"""

from __future__ import annotations

from typing import Protocol

from models.approvals import ApprovalMessage, ApproverChannels
from models.errors import PermanentError
from models.records import RequestRecord


class SlackApprovalPoster(Protocol):
    """Posts and updates approval messages in a Slack channel (adapters/slack.py)."""

    def announce(self, record: RequestRecord, channel: str, delivery_id: str) -> ApprovalMessage:
        """Post the approval message; return where it is (channel and ts)."""
        ...

    def settle(self, record: RequestRecord, message: ApprovalMessage) -> None:
        """Replace the message with the outcome and who decided."""
        ...


class TeamsApprovalPoster(Protocol):
    """Posts and updates approval cards in a Teams channel through the bot (adapters/teams_bot.py)."""

    def announce(self, record: RequestRecord, conversation: str, service_url: str, delivery_id: str) -> ApprovalMessage:
        """Post the approval card; return where it is (conversation and activity id)."""
        ...

    def settle(self, record: RequestRecord, message: ApprovalMessage) -> None:
        """Update the card with the outcome and who decided."""
        ...


class ApprovalPosters:
    """Ask approvers in every channel a request's policy names (an `engine.ports.ApprovalAnnouncer`)."""

    def __init__(self, *, slack: SlackApprovalPoster | None, teams: TeamsApprovalPoster | None) -> None:
        self.slack = slack
        self.teams = teams

    def announce(self, record: RequestRecord, channels: ApproverChannels, delivery_id: str) -> list[ApprovalMessage]:
        """Post to each named channel; a channel whose platform is not configured is a permanent error."""
        posted: list[ApprovalMessage] = []
        if channels.slack_channel:
            if self.slack is None:
                raise PermanentError(
                    "the policy names an approvers' Slack channel, but SLACK_BOT_TOKEN is not set", code="NotConfigured"
                )
            posted.append(self.slack.announce(record, channels.slack_channel, delivery_id))
        if channels.teams_conversation and channels.teams_service_url:
            if self.teams is None:
                raise PermanentError(
                    "the policy names an approvers' Teams channel, but the Teams bot (TEAMS_BOT_APP_ID, "
                    "TEAMS_BOT_APP_PASSWORD) is not configured",
                    code="NotConfigured",
                )
            posted.append(
                self.teams.announce(record, channels.teams_conversation, channels.teams_service_url, delivery_id)
            )
        return posted

    def settle(self, record: RequestRecord, message: ApprovalMessage) -> None:
        """Update one posted message with the outcome."""
        poster = self.slack if message.platform == "slack" else self.teams
        if poster is not None:
            poster.settle(record, message)
