"""Slack (`slack-sdk`): request verification, Block Kit replies, and posting results back.

Approval messages (`SlackApprovals`, an `adapters.approvers.SlackApprovalPoster`) are posted to the
approvers' channel with `chat.postMessage` and replaced with the outcome with `chat.update`; their
reason box (a `plain_text_input`, action id `reason`) is read from the click's `state.values`.

Verification follows Slack's signing scheme through `slack_sdk.signature.SignatureVerifier`
(HMAC-SHA256 of `v0:<timestamp>:<body>`, compared in constant time); requests whose timestamp is
more than five minutes from now, and requests seen before (a replayed signature), are refused. What
was seen is remembered in the store (`remember_once`), so every instance refuses a replay, also
after a restart. Results go back through the command's `response_url` while Slack keeps it valid
(30 minutes) and through `chat.postMessage` with the bot token after that, or when the URL is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from engine.chat import USAGE, Replays, Reply
from models.approvals import ApprovalMessage
from models.errors import PermanentError, TransientError
from models.records import RequestRecord, SlackConversation
from models.redact import register

if TYPE_CHECKING:
    from slack_sdk import WebClient

    from models.settings import Settings

MAX_AGE_S = 300
# A nonce is remembered a little past the window: an instance whose clock runs ahead purges expired
# entries by its own clock, while one whose clock runs behind still accepts the request by its own.
REPLAY_MARGIN_S = 60
REPLAY_SCOPE = "slack-signature"
RESPONSE_URL_LIFETIME_S = 25 * 60  # Slack keeps a response_url for 30 minutes; leave a margin
REASON_ACTION = "reason"


class SlackVerifier:
    """Check that a request comes from Slack: signature, age, and not seen before by any instance."""

    def __init__(self, signing_secret: str, *, clock: Callable[[], float] = time.time) -> None:
        from slack_sdk.signature import Clock, SignatureVerifier

        class _Clock(Clock):
            def now(self) -> float:
                return clock()

        self._verifier = SignatureVerifier(signing_secret, clock=_Clock())
        self.clock = clock

    def refusal(self, body: bytes, headers: Mapping[str, str], *, replays: Replays) -> str | None:
        """Return why the request is refused, or None when it is genuine and new (it is then remembered)."""
        timestamp = headers.get("x-slack-request-timestamp")
        signature = headers.get("x-slack-signature")
        if not timestamp or not signature:
            return "the request is not signed (X-Slack-Signature and X-Slack-Request-Timestamp are required)."
        try:
            stamp = int(timestamp)
        except ValueError:
            return "X-Slack-Request-Timestamp is not a number."
        now = self.clock()
        if abs(now - stamp) > MAX_AGE_S:
            return "the request is older than five minutes; it may be a replay."
        if not self._verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
            return "the signature does not match the body; check SLACK_SIGNING_SECRET."
        # Only a genuine request is remembered: forgeries cannot fill the store.
        first = replays.remember_once(
            REPLAY_SCOPE,
            f"{stamp}:{signature}",
            now=datetime.fromtimestamp(now, UTC),
            until=datetime.fromtimestamp(stamp + MAX_AGE_S + REPLAY_MARGIN_S, UTC),
        )
        if not first:
            return "this request was already received; a replay is refused."
        return None


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text[:2900]}


def blocks(reply: Reply) -> list[dict[str, Any]]:
    """Render a reply as Block Kit blocks."""
    icon = "" if reply.ok else ":warning: "
    out: list[dict[str, Any]] = [{"type": "section", "text": _mrkdwn(f"{icon}*{reply.title}*")}]
    if reply.lines:
        out.append({"type": "section", "text": _mrkdwn("\n".join(reply.lines))})
    if reply.fields:
        out.append({"type": "section", "fields": [_mrkdwn(f"*{k}*\n{v}") for k, v in reply.fields[:10]]})
    if reply.problems:
        out.append(
            {"type": "section", "text": _mrkdwn("\n".join(f"• `{p.field}`: {p.message}" for p in reply.problems))}
        )
    if reply.usage:
        out.append({"type": "section", "text": _mrkdwn("*Usage* (`/mlws <command>`)\n" + USAGE)})
    elements: list[dict[str, Any]] = []
    if reply.link:
        elements.append({"type": "button", "text": {"type": "plain_text", "text": reply.link[0]}, "url": reply.link[1]})
    for button in reply.buttons:
        element: dict[str, Any] = {
            "type": "button",
            "text": {"type": "plain_text", "text": button.label},
            "action_id": button.action,
            "value": button.value or "-",
        }
        if button.style:
            element["style"] = button.style
        elements.append(element)
    if any(button.action == "deny" for button in reply.buttons):
        # Deny reads its reason from here (the click's state.values, action id "reason").
        out.append(
            {
                "type": "input",
                "block_id": "reason",
                "optional": True,
                "label": {"type": "plain_text", "text": "Reason (needed to deny; the requester is told)"},
                "element": {"type": "plain_text_input", "action_id": REASON_ACTION, "max_length": 1000},
            }
        )
    if elements:
        out.append({"type": "actions", "elements": elements})
    return out


def message(reply: Reply) -> dict[str, Any]:
    """Build a slash-command or response_url message: visible to the channel or to the asker only."""
    return {
        "response_type": "in_channel" if reply.public else "ephemeral",
        "text": reply.text()[:3000],
        "blocks": blocks(reply),
    }


class SlackPoster:
    """Post a reply to the Slack conversation a request came from."""

    def __init__(
        self,
        *,
        bot_token: str | None,
        api_url: str = "https://slack.com/api/",
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bot_token = bot_token
        self.api_url = api_url
        self.timeout_s = timeout_s
        self.clock = clock

    def post(self, reply_to: SlackConversation, reply: Reply, delivery_id: str) -> None:
        """Post through response_url while it is valid, else chat.postMessage; raise Transient/Permanent."""
        url = reply_to.response_url
        fresh = self.clock() - reply_to.at < RESPONSE_URL_LIFETIME_S
        if url and fresh and self._via_response_url(url, reply):
            return
        self._via_web_api(reply_to, reply, delivery_id)

    def _via_response_url(self, url: str, reply: Reply) -> bool:
        from slack_sdk.webhook import WebhookClient

        register(url)
        try:
            response = WebhookClient(url, timeout=int(self.timeout_s)).send_dict(
                {**message(reply), "replace_original": False}
            )
        except OSError as exc:
            raise TransientError(f"Slack did not answer: {type(exc).__name__}", code="SlackUnreachable") from exc
        if response.status_code == 200:
            return True
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(f"Slack answered {response.status_code}", code="SlackUnavailable")
        return False  # expired or used up: fall back to the Web API

    def _via_web_api(self, reply_to: SlackConversation, reply: Reply, delivery_id: str) -> None:
        from slack_sdk import WebClient

        channel = reply_to.channel
        if not self.bot_token or not channel:
            raise PermanentError(
                "the Slack response_url has expired and there is no bot token (SLACK_BOT_TOKEN) or channel to post "
                "with; set SLACK_BOT_TOKEN.",
                code="SlackNotConfigured",
            )
        client = WebClient(token=self.bot_token, base_url=self.api_url, timeout=int(self.timeout_s))
        with web_api_errors("invite the app to the channel or check its scopes (chat:write)"):
            client.chat_postMessage(
                channel=str(channel),
                text=reply.text()[:3000],
                blocks=blocks(reply),
                metadata={"event_type": "workspace_vending_result", "event_payload": {"delivery_id": delivery_id}},
            )


@contextmanager
def web_api_errors(advice: str) -> Iterator[None]:
    """Translate the Web API's refusals: rate limits, 5xx and the network are transient, the rest permanent."""
    from slack_sdk.errors import SlackApiError

    try:
        yield
    except SlackApiError as exc:
        error = str(exc.response.get("error", "unknown")) if exc.response is not None else "unknown"
        if error == "ratelimited" or (exc.response is not None and exc.response.status_code >= 500):
            retry = exc.response.headers.get("Retry-After") if exc.response is not None else None
            raise TransientError(
                f"Slack refused for now ({error})",
                retry_after_s=float(retry) if retry and str(retry).isdigit() else None,
                code="SlackRateLimited",
            ) from exc
        raise PermanentError(f"Slack refused the message ({error}); {advice}.", code="SlackRefused") from exc
    except OSError as exc:
        raise TransientError(f"Slack did not answer: {type(exc).__name__}", code="SlackUnreachable") from exc


class ApprovalRenderer(Protocol):
    """What renders approval messages (`engine.chat.Chat`)."""

    def approval_request(self, record: RequestRecord) -> Reply:
        """Ask the approvers, with Approve and Deny."""
        ...

    def approval_settled(self, record: RequestRecord) -> Reply:
        """Say the outcome and who decided."""
        ...


class SlackApprovals:
    """Post approval messages to the approvers' Slack channel, and replace them with the outcome once decided."""

    def __init__(
        self,
        *,
        renderer: Callable[[], ApprovalRenderer],
        bot_token: str | None = None,
        api_url: str = "https://slack.com/api/",
        timeout_s: float = 10.0,
        client: WebClient | None = None,
    ) -> None:
        """Post with `client`, or one built from the bot token; `renderer` returns what renders the messages."""
        if client is None:
            if not bot_token:
                raise ValueError("SlackApprovals needs a client or a bot token (SLACK_BOT_TOKEN)")
            from slack_sdk import WebClient

            client = WebClient(token=bot_token, base_url=api_url, timeout=int(timeout_s))
        self.client = client
        self.renderer = renderer

    @classmethod
    def from_settings(cls, settings: Settings, renderer: Callable[[], ApprovalRenderer]) -> SlackApprovals | None:
        """Return the poster of the bot token (SLACK_BOT_TOKEN, SLACK_API_URL), or None when there is no token."""
        token = settings.slack_bot_token
        if token is None:
            return None
        return cls(renderer=renderer, bot_token=token.get_secret_value(), api_url=settings.slack_api_url)

    def announce(self, record: RequestRecord, channel: str, delivery_id: str) -> ApprovalMessage:
        """Post the approval message to the channel; return where it is (channel and ts)."""
        reply = self.renderer().approval_request(record)
        with web_api_errors("invite the app to the approvers' channel or check its scopes (chat:write)"):
            response = self.client.chat_postMessage(
                channel=channel,
                text=reply.text()[:3000],
                blocks=blocks(reply),
                metadata={
                    "event_type": "workspace_vending_approval",
                    "event_payload": {"delivery_id": delivery_id, "request_id": record.id},
                },
            )
        ts = response.get("ts")
        if not isinstance(ts, str) or not ts:
            raise PermanentError("Slack posted the approval message but said no ts; it cannot be updated.")
        return ApprovalMessage(platform="slack", channel=channel, message_id=ts)

    def settle(self, record: RequestRecord, message: ApprovalMessage) -> None:
        """Replace the posted message with the outcome and who decided (no buttons)."""
        reply = self.renderer().approval_settled(record)
        with web_api_errors("the message may be gone, or the app may have left the channel"):
            self.client.chat_update(
                channel=message.channel, ts=message.message_id, text=reply.text()[:3000], blocks=blocks(reply)
            )
