"""The one composition root: builds the adapters lazily from settings and lets tests swap any of them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from adapters.telemetry import Telemetry
from engine.audit import Audit, Guard
from engine.deadletters import DeadLetters
from engine.events import EventFanout
from engine.intake import Intake
from engine.policy import load_policy, policy_with_tenant
from engine.ports import Bus, ChatPoster, Cloud, EventSink, Notifier, Preflight, Store
from engine.steps import StepEngine, utcnow
from models.policy import Policy
from models.records import RequestRecord
from models.redact import register
from models.settings import Settings

if TYPE_CHECKING:
    from adapters.approvers import ApprovalPosters
    from adapters.auth import Authenticator
    from adapters.slack import SlackVerifier
    from adapters.teams_bot import TeamsBot
    from cloud.preflight import ArmPreflight
    from devhost.identity import LocalIssuer
    from engine.approvals import Approvals
    from engine.authz import Authority
    from engine.chat import Chat, SubmissionLimit
    from engine.confinement import Confinement, ResourceReader
    from engine.lifecycle import Lifecycle
    from engine.ports import Membership
    from models.identity import AuthSettings


class Container:
    """Holds the service's parts; each is built on first use, or given by the caller."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        bus: Bus | None = None,
        cloud: Cloud | None = None,
        notifier: Notifier | None = None,
        preflight: Preflight | None = None,
        policy: Policy | None = None,
        sinks: list[EventSink] | None = None,
        chat_poster: ChatPoster | None = None,
        auth_settings: AuthSettings | None = None,
        authenticator: Authenticator | None = None,
        membership: Membership | None = None,
        authorizer: Authority | None = None,
        confinement: Confinement | None = None,
        resource_reader: ResourceReader | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.clock = clock
        register(*settings.secret_values())  # masked in every log line, event and span from here on
        self._given: dict[str, Any] = {
            "store": store,
            "bus": bus,
            "cloud": cloud,
            "notifier": notifier,
            "preflight": preflight,
            "policy": policy,
            "sinks": sinks,
            "chat_poster": chat_poster,
            "auth_settings": auth_settings,
            "authenticator": authenticator,
            "membership": membership,
            "authorizer": authorizer,
            "confinement": confinement,
            "resource_reader": resource_reader,
        }
        self._built: dict[str, Any] = {}
        self._lock = threading.RLock()
        if settings.cloud == "azure":
            self.policy  # noqa: B018 - refuse to start, not to plan, when there is no tenant (policy_with_tenant)

    def swap(self, **parts: Any) -> None:
        """Replace parts (store, bus, cloud, policy, sinks) before first use; for tests and tools."""
        unknown = set(parts) - set(self._given)
        if unknown:
            raise TypeError(f"cannot swap {sorted(unknown)}; parts are {sorted(self._given)}")
        with self._lock:
            self._given.update(parts)
            self._built.clear()

    def warm(self, *, steps: bool) -> None:
        """Build intake with its ARM reader, and with `steps` the provider and the SDKs steps use; before traffic.

        For a starting instance, off the request path (the devhost's warm-up thread, the Functions warm-up
        trigger). Raises what a part's build raises; the first request or step would meet the same.
        """
        self.intake  # noqa: B018 - with confinement, and the directory and the signing key it reads
        self.resource_reader  # noqa: B018 - confinement's reader: the first submission's ARM read
        if steps:  # where no step runs, azure.ai.ml's 1-2 s and 100 MB are not worth paying (DESIGN section 6)
            from cloud.clients import Clients

            self.cloud  # noqa: B018 - the provider and its clients' pool
            Clients.warm()

    def _get(self, name: str, build: Callable[[], Any]) -> Any:
        if self._given.get(name) is not None:
            return self._given[name]
        with self._lock:
            if name not in self._built:
                self._built[name] = build()
            return self._built[name]

    @property
    def store(self) -> Store:
        """The state store."""

        def build() -> Store:
            s = self.settings
            if s.store == "tables":
                from adapters.tables_store import TablesStore, connect
                from cloud.credentials import azure_credential

                secret = s.tables_connection_string
                service = connect(
                    connection_string=secret.get_secret_value() if secret else None,
                    endpoint=s.tables_endpoint,
                    credential=None
                    if secret or not s.tables_endpoint
                    else azure_credential(s.tables_client_id or s.azure_client_id),
                )
                return TablesStore(service, prefix=s.tables_prefix)
            from adapters.sqlite_store import SqliteStore

            return SqliteStore(s.data_dir / "state.db")

        return self._get("store", build)  # type: ignore[no-any-return]

    @property
    def bus(self) -> Bus:
        """The message bus."""

        def build() -> Bus:
            s = self.settings
            if s.bus == "servicebus":
                from adapters.servicebus_bus import ServiceBusBus
                from cloud.credentials import azure_credential

                secret = s.servicebus_connection_string
                return ServiceBusBus(
                    fully_qualified_namespace=s.servicebus_namespace,
                    connection_string=secret.get_secret_value() if secret else None,
                    credential=None if secret else azure_credential(s.azure_client_id),
                )
            from adapters.sqlite_bus import SqliteBus

            return SqliteBus(
                s.data_dir / "bus.db",
                lock_s=s.bus_lock_s,
                max_deliveries=s.bus_max_deliveries,
                duplicate_window_s=s.bus_duplicate_window_s,
            )

        return self._get("bus", build)  # type: ignore[no-any-return]

    @property
    def policy(self) -> Policy:
        """The platform policy, loaded once."""
        return self._get(  # type: ignore[no-any-return]
            "policy", lambda: policy_with_tenant(load_policy(self.settings.policy_file), self.settings)
        )

    @property
    def cloud(self) -> Cloud:
        """The cloud provider; imports the Azure SDKs on first use only (never on the HTTP path)."""

        def build() -> Cloud:
            from cloud.provider import AzureProvider

            return AzureProvider.from_settings(self.settings, policy=self.policy)

        return self._get("cloud", build)  # type: ignore[no-any-return]

    @property
    def notifier(self) -> Notifier:
        """Callback delivery."""

        def build() -> Notifier:
            from adapters.webhook import HttpNotifier

            return HttpNotifier(
                signing_secret=self.callback_secret,
                timeout_s=self.settings.callback_timeout_s,
                policy=lambda: self.policy,
            )

        return self._get("notifier", build)  # type: ignore[no-any-return]

    @property
    def events(self) -> EventFanout:
        """Every event sink behind one emitter."""

        def build() -> EventFanout:
            from adapters.event_log import ConsoleEventLog, JsonLinesEventLog, StoreEventLog

            sinks = self._given.get("sinks")
            if sinks is None:
                sinks = [
                    StoreEventLog(self.store),
                    JsonLinesEventLog(self.settings.data_dir / "events.jsonl"),
                    ConsoleEventLog(),
                ]
                if self.telemetry.enabled:
                    from adapters.telemetry import TelemetryEventSink

                    sinks.append(TelemetryEventSink())
            return EventFanout(sinks)

        return self._get("events", build)  # type: ignore[no-any-return]

    @property
    def callback_secret(self) -> bytes:
        """The key callbacks are signed with: the setting, else one kept in the data directory."""

        def build() -> bytes:
            s = self.settings
            if s.callback_signing_secret is not None:
                return s.callback_signing_secret.get_secret_value().encode()
            if s.callback_signing_secret_uri:
                from adapters.secrets import KeyVaultSecret
                from cloud.credentials import azure_credential

                value = KeyVaultSecret(
                    s.callback_signing_secret_uri, credential=azure_credential(s.azure_client_id)
                ).value()
            else:
                from adapters.secrets import load_or_create_secret

                value = load_or_create_secret(s.data_dir / "callback-signing-secret").decode().strip()
            register(value)
            return value.encode()

        return self._get("callback_secret", build)  # type: ignore[no-any-return]

    @property
    def chat(self) -> Chat:
        """The Slack and Teams commands."""

        def build() -> Chat:
            from engine.chat import Chat

            key = self.settings.slack_signing_secret
            return Chat(
                intake=self.intake,
                lifecycle=self.lifecycle,
                store=self.store,
                policy=lambda: self.policy,
                signing_key=key.get_secret_value().encode() if key else self.callback_secret,
                studio_url=self.settings.studio_url,
                authorizer=lambda: self.authorizer,
                submissions=self.submissions,
                audit=self.audit.decided,
                approvals=self.approvals,
            )

        return self._get("chat", build)  # type: ignore[no-any-return]

    @property
    def slack_verifier(self) -> SlackVerifier:
        """Checks Slack's signatures and refuses replays (needs SLACK_SIGNING_SECRET)."""

        def build() -> SlackVerifier:
            from adapters.slack import SlackVerifier

            secret = self.settings.slack_signing_secret
            assert secret is not None, "SLACK_SIGNING_SECRET is not set"
            return SlackVerifier(secret.get_secret_value())

        return self._get("slack_verifier", build)  # type: ignore[no-any-return]

    @property
    def chat_poster(self) -> ChatPoster:
        """Posts results to the Slack or Teams conversation a request came from."""

        def build() -> ChatPoster:
            from adapters.slack import SlackPoster
            from adapters.teams import ChatPosters, TeamsPoster

            s = self.settings
            token, workflows = s.slack_bot_token, s.teams_workflows_url
            return ChatPosters(
                slack=SlackPoster(bot_token=token.get_secret_value() if token else None, api_url=s.slack_api_url),
                teams=TeamsPoster(workflows_url=workflows.get_secret_value() if workflows else None),
            )

        return self._get("chat_poster", build)  # type: ignore[no-any-return]

    @property
    def approval_announcer(self) -> ApprovalPosters:
        """Asks approvers in their Slack and Teams channels, and updates the message once decided."""

        def build() -> ApprovalPosters:
            from adapters.approvers import ApprovalPosters
            from adapters.slack import SlackApprovals

            bot = self.teams_bot
            return ApprovalPosters(
                slack=SlackApprovals.from_settings(self.settings, lambda: self.chat),
                teams=bot.approvals if bot is not None else None,
            )

        return self._get("approval_announcer", build)  # type: ignore[no-any-return]

    @property
    def teams_bot(self) -> TeamsBot | None:
        """The Teams bot that asks approvers (docs/teams-bot.md); None until TEAMS_BOT_APP_ID and its password are set."""

        def build() -> TeamsBot | None:
            s = self.settings
            if not s.teams_bot_app_id or s.teams_bot_app_password is None:
                return None
            from adapters.teams_bot import TeamsBot

            return TeamsBot(
                app_id=s.teams_bot_app_id,
                password=s.teams_bot_app_password.get_secret_value(),
                openid_url=s.teams_bot_openid_url,
                token_url=s.teams_bot_token_endpoint,
                card_secret=self.callback_secret,
            )

        return self._get("teams_bot", build)  # type: ignore[no-any-return]

    @property
    def auth_settings(self) -> AuthSettings:
        """How callers are authenticated (`VENDING_AUTH_*`, models/identity.py)."""

        def build() -> AuthSettings:
            from models.identity import AuthSettings

            return AuthSettings()

        return self._get("auth_settings", build)  # type: ignore[no-any-return]

    @property
    def local_issuer(self) -> LocalIssuer | None:
        """The devhost's embedded identity provider (VENDING_AUTH_MODE=local only), else None."""

        def build() -> LocalIssuer | None:
            if self.auth_settings.mode != "local":
                return None
            from devhost.identity import LocalIssuer

            s = self.settings
            return LocalIssuer.open(
                directory_file=self.auth_settings.directory_file,
                data_dir=s.data_dir,
                base_url=f"http://{s.host}:{s.port}",
            )

        return self._get("local_issuer", build)  # type: ignore[no-any-return]

    @property
    def authenticator(self) -> Authenticator:
        """Says who calls each REST route (and who sent each onboarding message), or refuses."""

        def build() -> Authenticator:
            from adapters.auth import Authenticator

            issuer = self.local_issuer
            if issuer is None:
                return Authenticator(self.auth_settings)
            # The embedded issuer's tokens go through the very code that checks Entra's: discovery,
            # the key set, the signature and every claim. Only the fetch stays in the process, so the
            # server never calls itself.
            return Authenticator(issuer.validation_settings(self.auth_settings), http=issuer.client())

        return self._get("authenticator", build)  # type: ignore[no-any-return]

    @property
    def membership(self) -> Membership:
        """Answers group membership when a token could not list the groups (overage), and for chat users."""

        def build() -> Membership:
            issuer = self.local_issuer
            if issuer is not None:
                from devhost.identity import LocalMembership

                return LocalMembership(issuer.directory)
            from adapters.graph import GraphMembership
            from cloud.credentials import azure_credential

            return GraphMembership(credential=azure_credential(self.settings.azure_client_id))

        return self._get("membership", build)  # type: ignore[no-any-return]

    @property
    def authorizer(self) -> Authority:
        """The one authorisation function (engine/authz.py), over the policy's teams."""

        def build() -> Authority:
            from engine.authz import Authorizer

            return Authorizer(policy=self.policy, membership=self.membership)

        return self._get("authorizer", build)  # type: ignore[no-any-return]

    @property
    def submissions(self) -> SubmissionLimit:
        """Each principal's allowance of submissions, kept in the store and shared by every door and instance."""

        def build() -> SubmissionLimit:
            from engine.chat import store_submission_limit

            s = self.settings
            return store_submission_limit(self.store, limit=s.submissions_per_window, window_s=s.submission_window_s)

        return self._get("submissions", build)  # type: ignore[no-any-return]

    @property
    def plans(self) -> SubmissionLimit:
        """Each principal's allowance of plans (each reads ARM for confinement), kept in the store like submissions."""

        def build() -> SubmissionLimit:
            from engine.chat import store_submission_limit

            s = self.settings
            return store_submission_limit(
                self.store,
                limit=s.plans_per_window,
                window_s=s.submission_window_s,
                bucket=lambda caller: f"plan:{caller.oid}",
            )

        return self._get("plans", build)  # type: ignore[no-any-return]

    @property
    def audit(self) -> Audit:
        """Records every decision and operator action as a status event (engine/audit.py)."""
        return self._get("audit", lambda: Audit(self.events, clock=self.clock))  # type: ignore[no-any-return]

    @property
    def guard(self) -> Guard:
        """Decides with the authoriser, records the decision, refuses when it says so."""
        return self._get("guard", lambda: Guard(lambda: self.authorizer, self.audit))  # type: ignore[no-any-return]

    @property
    def telemetry(self) -> Telemetry:
        """Spans for doors and steps, and whether telemetry goes to Azure Monitor (set up once per process)."""

        def build() -> Telemetry:
            from adapters.telemetry import configure

            return configure(self.settings)

        return self._get("telemetry", build)  # type: ignore[no-any-return]

    @property
    def engine(self) -> StepEngine:
        """The step engine."""
        return self._get(  # type: ignore[no-any-return]
            "engine",
            lambda: StepEngine(
                store=self.store,
                bus=self.bus,
                cloud=lambda: self.cloud,
                events=self.events,
                settings=self.settings,
                clock=self.clock,
            ),
        )

    @property
    def deadletters(self) -> DeadLetters:
        """The operators' view of every queue's dead letters."""
        from handlers.queues import dead_letter_sender

        return self._get(  # type: ignore[no-any-return]
            "deadletters",
            lambda: DeadLetters(
                bus=self.bus,
                store=self.store,
                engine=self.engine,
                intake=self.intake,
                settings=self.settings,
                sender_of=lambda letter: dead_letter_sender(
                    self.authenticator,
                    letter,
                    max_age_s=self.settings.dead_letter_replay_max_age_s,
                    now=self.clock(),
                ),
            ),
        )

    @property
    def preflight(self) -> Preflight | None:
        """Pre-flight checks against the cloud; None when there is no cloud to ask (no emulator running)."""
        return self._get("preflight", self._arm_reader)  # type: ignore[no-any-return]

    @property
    def resource_reader(self) -> ResourceReader | None:
        """Reads resources from ARM for confinement; None when there is no cloud to ask (no emulator running)."""
        return self._get("resource_reader", self._arm_reader)  # type: ignore[no-any-return]

    def _arm_reader(self) -> ArmPreflight | None:
        """Return the one client of ARM that pre-flight and confinement share."""

        def build() -> ArmPreflight | None:
            from cloud.clients import CloudEndpoint, emulator_endpoint
            from cloud.preflight import ArmPreflight

            s = self.settings
            if s.cloud == "emulator":
                if not s.emulator_url or not s.emulator_ca_bundle:
                    return None
                from cloud.credentials import EmulatorCredential

                endpoint = emulator_endpoint(s.emulator_url, str(s.emulator_ca_bundle))
                return ArmPreflight(endpoint, EmulatorCredential())
            from cloud.credentials import azure_credential

            return ArmPreflight(CloudEndpoint(s.arm_endpoint), azure_credential(s.azure_client_id))

        return self._get("arm_reader", build)  # type: ignore[no-any-return]

    @property
    def intake(self) -> Intake:
        """The intake: validation, policy, pre-flight, plan, record, start."""
        return self._get(  # type: ignore[no-any-return]
            "intake",
            lambda: Intake(
                store=self.store,
                engine=self.engine,
                policy=self.policy,
                events=self.events,
                guard=self.guard,
                confinement=self.confinement,
                preflight=self.preflight,
                clock=self.clock,
                waiting=self._waiting,
            ),
        )

    @property
    def lifecycle(self) -> Lifecycle:
        """Revisions, cancel, retry, extend, teardown, expiry and drift (engine/lifecycle.py)."""

        def build() -> Lifecycle:
            from engine.lifecycle import Lifecycle

            lifecycle = Lifecycle(
                store=self.store,
                engine=self.engine,
                policy=self.policy,
                events=self.events,
                guard=self.guard,
                confinement=self.confinement,
                cloud=lambda: self.cloud,
                bus=self.bus,
                settings=self.settings,
                clock=self.clock,
            )
            lifecycle.approvals = self.approvals
            return lifecycle

        return self._get("lifecycle", build)  # type: ignore[no-any-return]

    def _apply_pending(self, record: RequestRecord, by: str) -> RequestRecord:
        return self.lifecycle.apply_pending(record, by)

    def _waiting(self, record: RequestRecord, *, caller: str) -> None:
        self.approvals.waiting(record, caller=caller)

    @property
    def approvals(self) -> Approvals:
        """Approval gates (engine/approvals.py): who decides, what waits, what expires, where approvers are asked."""
        from engine.approvals import Approvals

        return self._get(  # type: ignore[no-any-return]
            "approvals",
            lambda: Approvals(
                store=self.store,
                engine=self.engine,
                policy=self.policy,
                events=self.events,
                guard=self.guard,
                bus=self.bus,
                settings=self.settings,
                apply_revision=self._apply_pending,
                clock=self.clock,
            ),
        )

    @property
    def confinement(self) -> Confinement:
        """What a team's requests may reach (engine/confinement.py), with the store's history and ARM's answers."""
        from engine.confinement import Confinement

        return self._get(  # type: ignore[no-any-return]
            "confinement",
            lambda: Confinement(
                policy=self.policy,
                membership=self.membership,
                history=self.store,
                reader=self.resource_reader,
                service_subscription_id=self.settings.service_subscription_id,
            ),
        )
