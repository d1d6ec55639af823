"""One typed settings object, read from the environment once at start."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from uuid import UUID

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def is_tls_or_loopback(url: str) -> bool:
    """Say whether a bearer token may be sent to `url`: https, or plain http to this machine only."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"))


DEFAULT_POLICY = Path(__file__).resolve().parent.parent / "policy" / "default.yaml"
BOT_OPENID_URL = "https://login.botframework.com/v1/.well-known/openidconfiguration"
BOT_TOKEN_URL = "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token"  # noqa: S105 - a URL


class Settings(BaseSettings):
    """Every setting of the service; environment variables are `VENDING_<NAME>` unless noted."""

    model_config = SettingsConfigDict(env_prefix="VENDING_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(Path(".local"), description="Where the embedded store, bus and event log live.")
    policy_file: Path = Field(DEFAULT_POLICY, description="The policy, YAML or JSON.")
    host: str = "127.0.0.1"
    port: int = Field(7071, validation_alias=AliasChoices("PORT", "VENDING_PORT"))

    onboarding_queue: str = Field("onboarding", validation_alias=AliasChoices("OnboardingQueueName"))
    steps_queue: str = Field("steps", validation_alias=AliasChoices("StepsQueueName"))
    notifications_queue: str = Field("notifications", validation_alias=AliasChoices("NotificationsQueueName"))
    callback_timeout_s: float = Field(10.0, gt=0, description="How long a callback POST may take.")
    submissions_per_window: int = Field(
        10, ge=1, le=1000, description="Submissions one principal may make per window, at every door together."
    )
    plans_per_window: int = Field(
        60,
        ge=1,
        le=1000,
        description="Plans (POST /api/plan) one principal may ask for per submission window; each reads ARM.",
    )
    submission_window_s: float = Field(600.0, gt=0, le=86400, description="The window of submissions_per_window.")
    dead_letter_replay_max_age_s: float = Field(
        7 * 86400.0,
        gt=0,
        le=14 * 86400.0,
        description="How old an onboarding dead letter may be and still be replayed as its sender (its token's roles).",
    )
    max_body_bytes: int = Field(
        65536, ge=1024, le=4 * 1024 * 1024, description="The largest REST request body accepted (413 above it)."
    )

    service_subscription_id: str | None = Field(
        None,
        description="The subscription the service itself runs in; never a provisioning target (infra/ sets it).",
    )

    store: Literal["sqlite", "tables"] = Field("sqlite", description="tables: Azure Table Storage (or Azurite).")
    tables_connection_string: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("TablesConnection", "VENDING_TABLES_CONNECTION_STRING"),
        description="A storage connection string; UseDevelopmentStorage=true is Azurite on its default port.",
    )
    tables_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices("TablesConnection__tableServiceUri", "VENDING_TABLES_ENDPOINT"),
        description="Identity-based connection: https://<account>.table.core.windows.net.",
    )
    tables_client_id: str | None = Field(
        None,
        validation_alias=AliasChoices("TablesConnection__clientId"),
        description="The user-assigned identity for Tables; AZURE_CLIENT_ID when unset.",
    )
    tables_prefix: str = Field("vending", description="Table names: <prefix>requests, <prefix>index, <prefix>events.")
    bus: Literal["sqlite", "servicebus"] = Field("sqlite", description="servicebus: Azure Service Bus queues.")
    servicebus_namespace: str | None = Field(
        None,
        validation_alias=AliasChoices("ServiceBusConnection__fullyQualifiedNamespace", "VENDING_SERVICEBUS_NAMESPACE"),
        description="Identity-based connection: <namespace>.servicebus.windows.net.",
    )
    servicebus_connection_string: SecretStr | None = Field(
        None, validation_alias=AliasChoices("ServiceBusConnection", "VENDING_SERVICEBUS_CONNECTION_STRING")
    )
    cloud: Literal["emulator", "azure"] = Field("emulator", description="emulator: the local ARM emulator.")
    tenant_id: UUID | None = Field(
        None,
        validation_alias=AliasChoices("VENDING_TENANT_ID", "AZURE_TENANT_ID"),
        description="The Entra tenant of the service's own identity, written into key vaults and compute "
        "instances unless the policy names one; required when cloud is azure.",
    )
    arm_endpoint: str = Field("https://management.azure.com/", description="Used when cloud is azure.")
    azure_client_id: str | None = Field(None, validation_alias=AliasChoices("AZURE_CLIENT_ID"))

    @field_validator("arm_endpoint")
    @classmethod
    def _arm_over_tls(cls, value: str) -> str:
        # The service's ARM token travels to it: never in the clear, but to a loopback test server.
        if not is_tls_or_loopback(value):
            raise ValueError(f"{value} is not an https URL; ARM's endpoint must be https (http only on loopback)")
        return value

    # Set by App Service on every app (read-only): the deployment holds no emulator (.funcignore), and a
    # deployed service must act on Azure.
    website_site_name: str | None = Field(None, validation_alias=AliasChoices("WEBSITE_SITE_NAME"))

    @model_validator(mode="after")
    def _azure_on_app_service(self) -> Settings:
        if self.website_site_name and self.cloud != "azure":
            raise ValueError(
                f"VENDING_CLOUD={self.cloud} is the devhost's local ARM emulator, which is not deployed; "
                "on App Service set VENDING_CLOUD=azure"
            )
        return self

    emulator_url: str | None = Field(
        None,
        description="The ARM emulator's URL: set by the devhost when it starts the emulator, or given to use one "
        "already running (python -m bench.emulator_process) instead of starting one.",
    )
    emulator_ca_bundle: Path | None = Field(None, description="The CA bundle that trusts the emulator's certificate.")
    arm_max_concurrency: int = Field(8, ge=1, description="Concurrent ARM calls per subscription.")
    poll_s: float = Field(5.0, gt=0, description="How long a step waits before looking again at work in progress.")

    workers: int = Field(
        8,
        ge=0,
        le=256,
        description="Step worker threads in the devhost; 0 runs none, for an intake-only process (as Flex Consumption "
        "runs HTTP functions on instances of their own).",
    )
    emulator_port: int = Field(0, description="0 picks a free port.")
    emulator_latency_s: float = Field(1.0, ge=0, description="How long emulated resources take to provision.")
    emulator_faults: Path | None = Field(None, description="A JSON or YAML file of fault rules for the emulator.")

    bus_lock_s: float = Field(60.0, gt=0, description="Peek-lock duration; a step's lease is shorter.")
    bus_max_deliveries: int = Field(10, ge=1)
    bus_duplicate_window_s: float = Field(600.0, ge=0)

    # Retry later, not again: a message whose handling failed is completed and sent again, scheduled.
    message_max_attempts: int = Field(
        15, ge=1, description="Tries at a queue message whose handling failed before it is dead-lettered."
    )
    message_retry_base_s: float = Field(1.0, ge=0, description="Delay before the second try; doubles each try.")
    message_retry_cap_s: float = Field(60.0, ge=0, description="Longest delay between two tries (before jitter).")
    message_max_wait_s: float = Field(
        1800.0, gt=0, description="No try starts later than this after the first; then the message is dead-lettered."
    )
    step_max_handling_failures: int = Field(
        5, ge=1, description="Failed handlings in a row after a step was claimed before the step is failed."
    )

    step_max_retries: int = Field(8, ge=0, description="Retry outcomes allowed before a step fails.")
    step_max_wait_s: float = Field(7200.0, gt=0, description="Total Wait time allowed before a step fails.")
    retry_base_s: float = Field(2.0, ge=0)
    retry_cap_s: float = Field(300.0, ge=0)
    sweep_interval_s: float = Field(30.0, gt=0)
    lifecycle_interval_s: float = Field(
        60.0, gt=0, description="Devhost: how often expiries and drift are looked at (Functions: LifecycleSchedule)."
    )
    sweep_grace_s: float = Field(300.0, ge=0, description="How late a step may be before the sweeper re-sends it.")

    slack_signing_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("SLACK_SIGNING_SECRET"), description="Verifies Slack's requests."
    )
    slack_bot_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("SLACK_BOT_TOKEN"), description="Posts results when response_url expired."
    )
    slack_api_url: str = Field("https://slack.com/api/", validation_alias=AliasChoices("SLACK_API_URL"))
    teams_outgoing_webhook_secret: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("TEAMS_OUTGOING_WEBHOOK_SECRET"),
        description="The base64 security token Teams issued for the outgoing webhook.",
    )
    teams_workflows_url: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("TEAMS_WORKFLOWS_URL"),
        description="A Teams Workflows webhook URL where results are posted as Adaptive Cards.",
    )
    # The Teams bot that asks approvers with Approve and Deny buttons (docs/teams-bot.md). Its values come
    # from the bot's Azure Bot resource; the endpoints are Microsoft's (bot-docs,
    # articles/rest-api/bot-framework-rest-connector-authentication.md): tokens are asked of the
    # botframework.com tenant, or of the bot's own tenant for a single-tenant bot, and Teams' requests
    # are verified with the keys named by the Bot Connector's OpenID metadata.
    teams_bot_app_id: str | None = Field(
        None,
        validation_alias=AliasChoices("TEAMS_BOT_APP_ID"),
        description="The bot's Microsoft App ID: the audience of the tokens Teams sends, the client id of its own.",
    )
    teams_bot_app_password: SecretStr | None = Field(
        None, validation_alias=AliasChoices("TEAMS_BOT_APP_PASSWORD"), description="The bot's client secret."
    )
    teams_bot_tenant_id: UUID | None = Field(
        None,
        validation_alias=AliasChoices("TEAMS_BOT_TENANT_ID"),
        description="A single-tenant bot's Entra tenant: its tokens are asked of that tenant's token endpoint.",
    )
    teams_bot_openid_url: str = Field(
        BOT_OPENID_URL,
        validation_alias=AliasChoices("TEAMS_BOT_OPENID_URL"),
        description="The Bot Connector's OpenID metadata: where the keys that sign Teams' requests are named.",
    )
    teams_bot_token_url: str = Field(
        BOT_TOKEN_URL,
        validation_alias=AliasChoices("TEAMS_BOT_TOKEN_URL"),
        description="Where the bot's access tokens are asked for (client credentials); with TEAMS_BOT_TENANT_ID "
        "and this left as it is, that tenant's token endpoint.",
    )
    callback_signing_secret: SecretStr | None = Field(
        None,
        description="Signs callbacks (X-Vending-Signature); unset: the Key Vault secret below, else a secret kept "
        "in the data directory (mode 0600) is used.",
    )
    callback_signing_secret_uri: str | None = Field(
        None,
        description="A Key Vault secret URI (https://<vault>.vault.azure.net/secrets/<name>) holding the callback "
        "signing secret, read with the managed identity (AZURE_CLIENT_ID): one secret per deployment.",
    )
    applicationinsights_connection_string: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("APPLICATIONINSIGHTS_CONNECTION_STRING"),
        description="Export telemetry to Application Insights; off when unset.",
    )
    applicationinsights_authentication_string: str | None = Field(
        None,
        validation_alias=AliasChoices("APPLICATIONINSIGHTS_AUTHENTICATION_STRING"),
        description="'Authorization=AAD;ClientId=<id>': send telemetry with Microsoft Entra ID (local auth off).",
    )
    telemetry_sampling_ratio: float = Field(1.0, ge=0, le=1, description="Share of traces kept (whole traces).")
    telemetry_live_metrics: bool = Field(False, description="Send Live Metrics to Application Insights.")

    studio_url: str = "https://ml.azure.com"

    @property
    def teams_bot_token_endpoint(self) -> str:
        """Where the bot asks for tokens: a single-tenant bot's own tenant, else the setting."""
        # Single-tenant bots ask their own tenant (Microsoft identity platform, client credentials:
        # https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow).
        if self.teams_bot_tenant_id is not None and self.teams_bot_token_url == BOT_TOKEN_URL:
            return f"https://login.microsoftonline.com/{self.teams_bot_tenant_id}/oauth2/v2.0/token"
        return self.teams_bot_token_url

    def secret_values(self) -> list[str]:
        """Every setting that is a secret, as plain text (for masking, never for printing)."""
        return [
            value.get_secret_value()
            for value in vars(self).values()
            if isinstance(value, SecretStr) and value.get_secret_value()
        ]
