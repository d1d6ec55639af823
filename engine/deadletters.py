"""Dead letters are not a silent grave: record what each one means, and let operators replay them.

A message lands in a dead-letter queue when its tries ran out (`RetriesExhausted`: a failure that
did not clear within the retry budget, see engine/redelivery.py) or it could not be settled within
the queue's max deliveries (`MaxDeliveryCountExceeded`: a worker that kept crashing; on Functions
also the end of a spent retry budget). The processor reads each queue's dead letters and records
them where people look: a step message fails its step (with the dead-letter reason; dependents are
skipped and the request finishes), an onboarding message becomes a rejected request for each
environment it asks for, with its team, a notification marks the callback failed. Each record is
made once; the dead letter stays until an operator replays or removes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.authz import Act
from engine.intake import Intake, queue_key, unproven_sender
from engine.ports import Bus, DeadLetter, OutgoingMessage, Store
from engine.steps import StepEngine
from models.errors import ConflictError, Problem
from models.identity import AuthenticationError, Caller
from models.messages import DeliveryAttempt, StepMessage, original_message_id, without_attempt
from models.records import ErrorInfo, Notification, RequestRecord, StepStatus
from models.settings import Settings

log = logging.getLogger(__name__)


class ReplayRefusedError(ConflictError):
    """A dead letter that cannot be replayed as it stands (409): the message says what to do instead."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="ReplayRefused")


@dataclass(frozen=True)
class DeadLetterView:
    """A dead letter, and what it is about."""

    letter: DeadLetter
    kind: str  # step, onboarding, notification
    request_id: str | None
    step_id: str | None


SenderProof = Callable[[DeadLetter], "Caller | AuthenticationError"]
"""Who a dead letter's token proves sent it, as of when the bus took it in (handlers/queues.py)."""


class DeadLetters:
    """Reads, records and replays the dead letters of every queue.

    `sender_of` says who sent an onboarding dead letter: its token checked as of the time the bus
    took the message in, since by the time an operator replays it the token has usually expired.
    """

    def __init__(
        self,
        *,
        bus: Bus,
        store: Store,
        engine: StepEngine,
        intake: Intake,
        settings: Settings,
        sender_of: SenderProof,
    ) -> None:
        self.bus = bus
        self.store = store
        self.engine = engine
        self.intake = intake
        self.settings = settings
        self.sender_of = sender_of

    @property
    def queues(self) -> dict[str, str]:
        """Map each queue to the kind of message on it."""
        s = self.settings
        return {s.steps_queue: "step", s.onboarding_queue: "onboarding", s.notifications_queue: "notification"}

    def list(self) -> list[DeadLetterView]:
        """Return every dead letter of every queue."""
        out = []
        for queue, kind in self.queues.items():
            for letter in self.bus.dead_letters(queue):
                props = letter.application_properties
                out.append(DeadLetterView(letter, kind, props.get("request_id"), props.get("step_id")))
        return out

    def find(self, message_id: str, sequence: int | None = None) -> DeadLetterView | None:
        """Return the dead letter with this message id (and sequence number), if there is one.

        Message ids are the sender's and may repeat: when several letters share one and no
        sequence number says which, `ConflictError` lists them rather than pick one.
        """
        found = [v for v in self.list() if v.letter.message_id == message_id and sequence in (None, v.letter.sequence)]
        if len(found) > 1:
            numbers = ", ".join(str(v.letter.sequence) for v in found)
            raise ConflictError(
                f"{len(found)} dead letters have the message id {message_id} (sequence numbers {numbers}); "
                "say which with its sequence number.",
                code="AmbiguousDeadLetter",
            )
        return found[0] if found else None

    def process(self) -> int:
        """Record what each dead letter means; return how many records were made."""
        made = 0
        for view in self.list():
            try:
                recorded = self._record(view)
            except Exception:
                log.exception("recording dead letter %s failed", view.letter.message_id)
                continue
            if recorded:
                letter = view.letter
                # One structured line per dead letter: what the operators' dead-letter query counts.
                log.warning(
                    "dead letter on %s recorded: %s message %s (%s)",
                    letter.queue,
                    view.kind,
                    letter.message_id,
                    letter.reason,
                    extra={
                        "dead_letter_queue": letter.queue,
                        "dead_letter_kind": view.kind,
                        "dead_letter_reason": letter.reason,
                        "request_id": view.request_id or "",
                    },
                )
            made += recorded
        return made

    def _why(self, letter: DeadLetter) -> str:
        at = letter.dead_lettered_at
        attempt = DeliveryAttempt.of(message_id=letter.message_id, properties=letter.application_properties, now=at)
        tried = f"{letter.delivery_count} deliveries"
        if attempt.number > 1:
            tried = f"{attempt.number} tries over {attempt.waited_s(at):.0f} s (the last one delivered {letter.delivery_count} times)"
        return (
            f"its queue message was dead-lettered after {tried} "
            f"({letter.reason}: {letter.description or 'no description'}). Fix the cause, then replay it: "
            f"python -m cli deadletters replay {letter.message_id}"
        )

    def _record(self, view: DeadLetterView) -> int:
        letter = view.letter
        if view.kind == "step":
            try:
                msg = StepMessage.model_validate_json(letter.body)
            except ValueError:
                log.error("dead letter %s on %s is not a step message; remove it", letter.message_id, letter.queue)
                return 0
            error = ErrorInfo(code="DeadLettered", message=f"step '{msg.step_id}' stopped: {self._why(letter)}")
            return int(
                self.engine.fail_step(request_id=msg.request_id, step_id=msg.step_id, error=error, attempt=msg.attempt)
            )
        if view.kind == "onboarding":
            return self._record_onboarding(letter)
        body = _json_object(letter.body)
        request_id = view.request_id or body.get("request_id")
        record = self.store.get_request(str(request_id)) if request_id else None
        if record is not None and body.get("kind") in ("announce", "settle"):
            return self._record_approval_message(record, str(body["kind"]), self._why(letter))
        if record is None or record.notification is None or record.notification.done:
            return 0
        note = record.notification.model_copy(
            update={"status": "failed", "error": f"the callback was not delivered: {self._why(letter)}"}
        )
        self.store.update_request(record.model_copy(update={"notification": note}))
        return 1

    def _record_approval_message(self, record: RequestRecord, kind: str, why: str) -> int:
        """Record on the request's approval that its approvers' message was not posted (or not updated)."""
        if record.approval is None:
            return 0
        text = f"the approvers' message was not {'posted' if kind == 'announce' else 'updated'}: {why}"
        state = record.approval.model_copy(update={"announced": True, "announce_error": text[:1000]})
        self.store.update_request(record.model_copy(update={"approval": state}))
        return 1

    def _record_onboarding(self, letter: DeadLetter) -> int:
        """Record a dead-lettered onboarding message as a rejected request per environment it asks for.

        One record per environment, each with the message's team and its environment, so that
        `list --team` shows the team's dead-lettered environments beside the ones that were made,
        and each request view reads like the request the team would have had. An environment whose
        request an earlier try made (or that an earlier run recorded) is left alone: both use the
        key intake gives that environment's request.
        """
        original = original_message_id(letter.message_id, letter.application_properties)
        problem = Problem("(message)", f"the onboarding message was not processed: {self._why(letter)}", "DeadLettered")
        parts = _onboarding_parts(letter.body)
        # The requester is who the message's token proves sent it, never what its body says; the
        # record goes in the team's listing only when that sender may act for the team.
        sender = self.sender_of(letter)
        proven = sender if isinstance(sender, Caller) else None
        who = proven.oid if proven is not None else unproven_sender(letter.body)
        made = 0
        for environment, raw in parts:
            key = queue_key(original, environment or None, sender=who)  # the key intake.onboard gives it
            if self.store.find_by_idempotency_key(key) is not None:
                continue
            team = raw.get("team") if isinstance(raw, dict) else None
            listed = (
                proven is not None
                and isinstance(team, str)
                and self.intake.guard.authorizer.authorize(proven, Act.REQUEST, team=team).allowed
            )
            self.intake.reject(
                raw=raw,
                problems=[problem],
                requester=proven.oid if proven is not None else "unknown",
                source="queue",
                idempotency_key=key,
                under_team=listed,
            )
            made += 1
        return made

    def _replay_onboarding(self, letter: DeadLetter) -> str:
        """Process an onboarding dead letter again, now, as its sender: what its token proved when it was sent.

        The sender is decided again by the one authorisation function, as at first delivery; the
        operator who replays acts for no team. A replay is new work under a new id: the rejected
        records made from the dead letter stay as history. When the sender cannot be proven (the
        token was not valid when the message was sent, or its signing key is gone) nothing is done
        and the dead letter stays, with what to do.
        """
        sender = self.sender_of(letter)
        if isinstance(sender, AuthenticationError):
            raise ReplayRefusedError(
                f"the sender of {letter.message_id} cannot be proven ({sender.reason}), so it is not processed as "
                "anyone; ask the sender to send the message again, then record this one (deadletters process)."
            )
        original = original_message_id(letter.message_id, letter.application_properties)
        new_id = f"{original}/replay-{_letter_tag(letter)}"
        records = self.intake.onboard(
            body=letter.body,
            message_id=new_id,
            sender=sender,
            traceparent=letter.application_properties.get("traceparent"),
        )
        made = ", ".join(f"{r.id} ({r.status.value})" for r in records) or "no request"
        return f"processed again as {new_id}, sent by {sender.oid}: {made}"

    def replay(self, message_id: str, sequence: int | None = None) -> str:
        """Replay a dead letter after its cause was fixed; say what was done."""
        view = self.find(message_id, sequence)
        if view is None:
            return f"no dead letter with message id {message_id}"
        letter = view.letter
        if view.kind == "step":
            msg = StepMessage.model_validate_json(letter.body)
            step = self.store.get_step(msg.request_id, msg.step_id)
            if step is not None and step.status == StepStatus.FAILED:
                self.engine.resume_step(request_id=msg.request_id, step_id=msg.step_id)
                outcome = f"resumed step {msg.step_id} of request {msg.request_id}"
            elif step is not None and not step.status.terminal:
                # Not recorded yet: the step is still waiting for this message; send the next attempt.
                self.engine.fail_step(
                    request_id=msg.request_id,
                    step_id=msg.step_id,
                    error=ErrorInfo(code="DeadLettered", message=self._why(letter)),
                )
                self.engine.resume_step(request_id=msg.request_id, step_id=msg.step_id)
                outcome = f"resumed step {msg.step_id} of request {msg.request_id}"
            else:
                outcome = f"step {msg.step_id} of request {msg.request_id} has finished; nothing to replay"
        elif view.kind == "onboarding":
            outcome = self._replay_onboarding(letter)
        else:
            queue = letter.queue
            # A replay is new work under a new id, with tries counted anew.
            original = original_message_id(letter.message_id, letter.application_properties)
            new_id = f"{original}/replay-{_letter_tag(letter)}"
            if view.kind == "notification":
                record = self.store.get_request(view.request_id or "")
                kind = _json_object(letter.body).get("kind")
                if record is not None and kind == "announce" and record.approval is not None:
                    # Posted anew: the approval is announced again, its earlier failure cleared.
                    state = record.approval.model_copy(update={"announced": False, "announce_error": None})
                    self.store.update_request(record.model_copy(update={"approval": state}))
                elif record is not None and kind is None:
                    self.store.update_request(record.model_copy(update={"notification": Notification()}))
            self.bus.send(
                queue,
                OutgoingMessage(
                    message_id=new_id,
                    body=letter.body,
                    correlation_id=original,
                    application_properties={
                        **without_attempt(letter.application_properties),
                        "replay_of": letter.message_id,
                    },
                ),
            )
            outcome = f"sent again to '{queue}' as {new_id}"
        self.bus.remove_dead_letter(letter.queue, letter.message_id, sequence=letter.sequence)
        return outcome


def _letter_tag(letter: DeadLetter) -> str:
    """Name one dead letter for good: a replay of it done twice (a retry after a fault) is the same work.

    The bus's sequence number when it has one, else a digest of what makes the letter itself.
    """
    if letter.sequence is not None:
        return str(letter.sequence)
    seen = f"{letter.queue}\n{letter.message_id}\n{letter.enqueued_at}\n".encode() + letter.body
    return hashlib.sha256(seen).hexdigest()[:12]


def _onboarding_parts(body: bytes) -> list[tuple[str, Any]]:
    """Split an onboarding body into one (environment, raw input) per request it asks for.

    Lenient on purpose: a dead letter's body is recorded as far as it can be read, so a
    `TeamOnboarding` gives one part per listed environment (each with the team) and a
    `WorkspaceRequest` one part; anything else one part with no environment. `requested_by`, which
    older senders put in the body, is dropped: the sender is what the token proves.
    """
    try:
        data = json.loads(body)
    except ValueError:
        return [("", body.decode("utf-8", "replace"))]
    if not isinstance(data, dict):
        return [("", data)]
    data.pop("requested_by", None)
    environments = data.get("environments")
    if isinstance(environments, list) and environments and all(isinstance(e, str) for e in environments):
        common = {k: v for k, v in data.items() if k not in ("environments", "kind")}
        return [(env, {**common, "environment": env}) for env in dict.fromkeys(environments)]
    environment = data.get("environment")
    return [(environment if isinstance(environment, str) else "", data)]


def _json_object(body: bytes) -> dict[str, object]:
    """Return a message body's JSON object, or an empty one when it is not one."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
