"""The chat doors: Slack slash commands and interactions, and a Teams outgoing webhook.

Each endpoint checks its platform's signature before reading anything, refuses a request it has
seen before (the replay guard is kept in the store: every instance shares it, and it survives a
restart), answers within the platform's deadline (the work is a plan, a submission whose pre-flight
is bounded to 1.5 s, or a lifecycle act that writes the request and queues its run's first steps),
and answers 503 with a clear message when its secret is not configured. A click on an approval
message's Approve or Deny is decided by `Chat.decide_click` (the clicker's rights, now). The
replies come from `engine.chat`; `adapters.slack` and `adapters.teams` render them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import parse_qs

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from adapters import slack, teams
from composition import Container
from engine.chat import Reply, Who
from models.records import ChatConversation, SlackConversation, TeamsConversation

log = logging.getLogger(__name__)


def add_chat_routes(api: FastAPI, container: Callable[[], Container], problem: Callable[..., JSONResponse]) -> None:
    """Add the Slack and Teams endpoints to the API."""

    def not_configured(what: str, setting: str) -> JSONResponse:
        return problem(
            503,
            f"{what} is not configured",
            detail=f"Set {setting} (from your {what} app) in the service's settings; until then this endpoint does nothing.",
        )

    async def from_slack(c: Container, request: Request) -> bytes | JSONResponse:
        """Return the body of a genuine Slack request, or the answer that refuses it."""
        if c.settings.slack_signing_secret is None:
            return not_configured("Slack", "SLACK_SIGNING_SECRET")
        body = await request.body()
        refusal = await run_in_threadpool(c.slack_verifier.refusal, body, request.headers, replays=c.store)
        if refusal:
            log.warning("Slack request to %s refused: %s", request.url.path, refusal)
            return problem(401, "Not a genuine Slack request", detail=refusal)
        return body

    @api.post("/api/chat/slack/commands", tags=["chat"], summary="Slack slash command (/mlws)")
    async def slack_command(request: Request) -> Response:
        c = container()
        body = await from_slack(c, request)
        if isinstance(body, JSONResponse):
            return body
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        user_id = form.get("user_id", "")
        who = Who("slack", user_id, c.policy.chat_user(slack=user_id))
        reply_to = SlackConversation(
            response_url=form.get("response_url"),
            channel=form.get("channel_id"),
            user=user_id,
            message_id=form.get("trigger_id"),
            at=time.time(),
        )
        return JSONResponse(slack.message(await _command(c, who, form.get("text", ""), reply_to)))

    @api.post("/api/chat/slack/interactions", tags=["chat"], summary="Slack interactivity (buttons)")
    async def slack_interaction(request: Request) -> Response:
        c = container()
        body = await from_slack(c, request)
        if isinstance(body, JSONResponse):
            return body
        try:
            form = parse_qs(body.decode("utf-8", "replace"))
            payload: dict[str, Any] = json.loads(form["payload"][0])
            action = payload["actions"][0]
        except (KeyError, IndexError, ValueError) as exc:
            return problem(
                400, "Not a Slack interaction", detail=f"expected a form field 'payload' with actions ({exc})."
            )
        user_id = str(payload.get("user", {}).get("id", ""))
        who = Who("slack", user_id, c.policy.chat_user(slack=user_id))
        channel = payload.get("channel")
        reply_to = SlackConversation(
            response_url=_text(payload.get("response_url")),
            channel=_text(channel.get("id")) if isinstance(channel, dict) else None,
            user=user_id,
            message_id=_text(payload.get("trigger_id")),
            at=time.time(),
        )
        action_id, value = str(action.get("action_id", "")), str(action.get("value", ""))
        if action_id in ("approve", "deny"):
            # An approval message in the approvers' channel: once decided, it shows who decided (for
            # everyone); a refusal goes to the clicker only, and the buttons stay for the other approvers.
            decision: Literal["approve", "deny"] = "approve" if action_id == "approve" else "deny"
            reply = await run_in_threadpool(
                c.chat.decide_click, who=who, token=value, decision=decision, reason=_reason(payload)
            )
            replace = reply.ok
        else:
            reply = await run_in_threadpool(_interaction, c, who, action_id, value, reply_to)
            replace = True
        if reply_to.response_url:
            await run_in_threadpool(_answer, reply_to.response_url, reply, replace=replace)
        return Response(status_code=200)

    @api.post("/api/chat/teams/messages", tags=["chat"], summary="Teams outgoing webhook")
    async def teams_message(request: Request) -> Response:
        c = container()
        secret = c.settings.teams_outgoing_webhook_secret
        if secret is None:
            return not_configured("Microsoft Teams", "TEAMS_OUTGOING_WEBHOOK_SECRET")
        body = await request.body()
        verifier = teams.TeamsVerifier(secret.get_secret_value())
        refusal = await run_in_threadpool(verifier.refusal, body, request.headers.get("authorization"), replays=c.store)
        if refusal:
            log.warning("Teams message refused: %s", refusal)
            return problem(401, "Not a genuine Teams request", detail=refusal)
        try:
            activity: dict[str, Any] = json.loads(body)
        except ValueError as exc:
            return problem(400, "Not a Teams activity", detail=f"the body is not JSON ({exc}).")
        sender = activity.get("from") or {}
        user_id = str(sender.get("aadObjectId") or sender.get("id") or "")
        who = Who("teams", user_id, c.policy.chat_user(teams=str(sender.get("aadObjectId") or "")))
        conversation = activity.get("conversation")
        reply_to = TeamsConversation(
            conversation=_text(conversation.get("id")) if isinstance(conversation, dict) else None,
            user=user_id,
            message_id=_text(activity.get("id")),
            at=time.time(),
        )
        return JSONResponse(teams.message(await _command(c, who, teams.command_text(activity), reply_to)))


def _text(value: object) -> str | None:
    """Return a chat platform's id as text: ids arrive as JSON strings (or numbers); anything else is none."""
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) and str(value) else None


async def _command(c: Container, who: Who, text: str, reply_to: ChatConversation) -> Reply:
    """Answer a command off the event loop (the store and the bus block), in the request's trace."""
    return await run_in_threadpool(
        c.chat.handle, who=who, text=text, reply_to=reply_to, traceparent=c.telemetry.current_traceparent()
    )


def _interaction(c: Container, who: Who, action: str, value: str, reply_to: ChatConversation) -> Reply:
    if action == "confirm_create":
        return c.chat.confirm(who=who, token=value, reply_to=reply_to, traceparent=c.telemetry.current_traceparent())
    if action == "confirm_delete":
        return c.chat.confirm_delete(who=who, token=value)
    if action == "refresh_status":
        return c.chat.status(who=who, request_id=value)
    if action == "cancel":
        # The value says what the offer was: a delete kept, or a create not made.
        return Reply("Kept: nothing was deleted." if value == "delete" else "Cancelled: nothing was created.")
    return Reply("That button is not one I know.", ok=False)


def _reason(payload: dict[str, Any]) -> str | None:
    """Return what the approval message's reason box holds (`state.values`, action id "reason"), if anything."""
    state = payload.get("state")
    values = state.get("values") if isinstance(state, dict) else None
    if not isinstance(values, dict):
        return None
    for block in values.values():
        entry = block.get(slack.REASON_ACTION) if isinstance(block, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("value"), str):
            return str(entry["value"])
    return None


def _answer(response_url: str, reply: Reply, *, replace: bool = True) -> None:
    """Update the message a button was on (or, with `replace` False, answer the clicker only), via response_url."""
    from slack_sdk.webhook import WebhookClient

    try:
        response = WebhookClient(response_url, timeout=3).send_dict(
            {**slack.message(reply), "replace_original": replace}
        )
        if response.status_code != 200:
            log.warning("Slack response_url answered %s", response.status_code)
    except OSError as exc:
        log.warning("Slack response_url did not answer: %s", exc)
