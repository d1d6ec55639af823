"""The Teams bot's messaging endpoint: the Bot Connector posts activities here; Approve and Deny are decided.

POST /api/chat/teams/bot is the bot's messaging endpoint (set in its Azure Bot resource). The Bot
Connector's token is checked before anything is read from the activity but its serviceUrl and
channel (adapters/teams_bot.py says how, after bot-docs), the activity is refused if seen before,
then a card's click is decided and answered with the card that replaces it (Universal Actions: HTTP 200
with the invoke response as the body). A refused click is answered with a card saying why, never an
error page. Other activities (the bot being added to a channel, a message to it) are acknowledged
and ignored. 503 while the bot is not configured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from adapters.teams_bot import INVOKE, BotActivity, not_handled
from composition import Container
from models.errors import TransientError

log = logging.getLogger(__name__)


def add_teams_bot_routes(
    api: FastAPI, container: Callable[[], Container], problem: Callable[..., JSONResponse]
) -> None:
    """Add the Teams bot's messaging endpoint to the API."""

    @api.post("/api/chat/teams/bot", tags=["chat"], summary="Teams bot messaging endpoint (approval cards)")
    async def teams_bot(request: Request) -> Response:
        c = container()
        bot = c.teams_bot
        if bot is None:
            return problem(
                503,
                "The Teams bot is not configured",
                detail="Set TEAMS_BOT_APP_ID and TEAMS_BOT_APP_PASSWORD (from the bot's Azure Bot resource) in the "
                "service's settings; until then this endpoint does nothing.",
            )
        body = await request.body()
        try:
            activity = BotActivity.model_validate_json(body)
        except ValidationError:
            return problem(400, "Not a Bot Framework activity", detail="the body is not a JSON activity.")
        try:
            refusal = await run_in_threadpool(
                bot.verifier.refusal, request.headers.get("authorization"), activity, replays=c.store
            )
        except TransientError as exc:
            return problem(503, "The Bot Connector's keys cannot be read now", detail=str(exc))
        if refusal is not None:
            log.warning("Teams bot request refused: %s", refusal.reason)
            return problem(refusal.status, "Not a genuine Bot Connector request", detail=refusal.reason)
        if activity.type != "invoke":
            return Response(status_code=200)
        if activity.name != INVOKE:
            return JSONResponse(not_handled(activity.name))
        actions = bot.actions(approvals=c.approvals, records=c.store, policy=lambda: c.policy)
        answer = await run_in_threadpool(actions.act, activity)
        return JSONResponse(answer.body())
