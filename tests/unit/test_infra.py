"""infra/ agrees with the code: Bicep cannot be compiled here, so what can be checked, is.

Every setting the code reads is set by the deployment or documented as optional; queue and table
names, lock, delivery and duplicate-detection settings agree across Bicep, host.json and the code;
every module referenced exists; every role GUID is a known built-in role, named where it is used.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import AliasChoices

from adapters.tables_store import table_names
from models.identity import AuthSettings
from models.settings import Settings
from tests.conftest import ROOT

INFRA = ROOT / "infra"
BICEP = {p.relative_to(INFRA).as_posix(): p.read_text() for p in INFRA.rglob("*.bicep")}
DEPLOY_DOC = (ROOT / "docs" / "deploy.md").read_text()
HOST = json.loads((ROOT / "host.json").read_text())
DEFAULTS = Settings(_env_file=None)  # type: ignore[call-arg]

# Built-in role definitions used by infra/ and the planner, by GUID (Azure's built-in role list).
KNOWN_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39": "Azure Service Bus Data Sender",
    "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0": "Azure Service Bus Data Receiver",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator",
    "f6c7c914-8db3-469d-8ca1-694a8f32e121": "AzureML Data Scientist",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    # https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/ai-machine-learning
    "e503ece1-11d0-4e8e-8e2c-7a6c3bf38815": "AzureML Compute Operator",
    # https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/storage
    "69566ab7-960f-475b-8e7c-b3118f30c6bd": "Storage File Data Privileged Contributor",
}
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# Every settings model the code reads, with its environment prefix.
SETTINGS_MODELS: dict[type, str] = {Settings: "VENDING_", AuthSettings: "VENDING_AUTH_"}


def _env_names(field: str, model: type = Settings) -> list[str]:
    alias = model.model_fields[field].validation_alias  # type: ignore[attr-defined]
    prefix = SETTINGS_MODELS[model]
    return [str(a) for a in alias.choices] if isinstance(alias, AliasChoices) else [f"{prefix}{field.upper()}"]


def _every_env_name() -> list[tuple[str, list[str]]]:
    return [(f, _env_names(f, m)) for m in SETTINGS_MODELS for f in m.model_fields]  # type: ignore[attr-defined]


def _block(text: str, start: str) -> str:
    """The text of a `{ ... }` block that opens on the line starting with `start`."""
    at = text.index(start)
    depth, i = 0, text.index("{", at)
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i : j + 1]
    raise AssertionError(f"unclosed block after {start}")


def _keys(block: str) -> set[str]:
    return set(re.findall(r"^\s+'?([A-Za-z_][\w]*)'?:", block, re.M))


APP_SETTINGS = _keys(_block(BICEP["modules/functionapp.bicep"], "var settings"))
SECRET_SETTINGS = _keys(_block(BICEP["modules/keyvault.bicep"], "var secretNames"))


def _setting(name: str) -> str:
    match = re.search(rf"^\s+{name}: '([^']*)'", BICEP["modules/functionapp.bicep"], re.M)
    assert match, f"{name} is not set to a literal in functionapp.bicep"
    return match.group(1)


def _duration_s(iso: str) -> float:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", iso)
    assert match, iso
    h, m, s = (int(x or 0) for x in match.groups())
    return h * 3600 + m * 60 + s


def _hms_s(value: str) -> float:
    h, m, s = (int(x) for x in value.split(":"))
    return h * 3600 + m * 60 + s


def test_every_setting_the_code_reads_is_deployed_or_documented_as_optional() -> None:
    documented = set(re.findall(r"`([A-Za-z_][\w]*)`", DEPLOY_DOC.split("## Settings not set by the deployment", 1)[1]))
    missing = [
        field
        for field, names in _every_env_name()
        if not any(n in APP_SETTINGS | SECRET_SETTINGS or n in documented for n in names)
    ]
    assert missing == [], f"settings neither deployed nor documented in docs/deploy.md: {missing}"
    # And nothing is deployed that the code (or the Functions host) does not read.
    read_by_code = {n for _, names in _every_env_name() for n in names}
    host_only = {s for s in APP_SETTINGS if s.startswith("AzureWebJobsStorage__") or s.endswith(("__credential",))}
    host_only |= {
        "SweepSchedule",
        "DeadLetterSchedule",
        "LifecycleSchedule",
        "ServiceBusConnection__clientId",
        "AzureWebJobsDisableHomepage",
    }
    assert APP_SETTINGS - read_by_code - host_only == set()


def test_the_deployment_runs_the_production_adapters() -> None:
    assert _setting("VENDING_STORE") == "tables" and _setting("VENDING_BUS") == "servicebus"
    assert _setting("VENDING_CLOUD") == "azure"
    assert "ClientId=${identityClientId};Authorization=AAD" in BICEP["modules/functionapp.bicep"]
    assert "connectionString" not in BICEP["modules/functionapp.bicep"].replace("ConnectionString", "")
    assert "allowSharedKeyAccess: false" in BICEP["modules/storage.bicep"]
    assert "disableLocalAuth: true" in BICEP["modules/servicebus.bicep"]
    assert "DisableLocalAuth: true" in BICEP["modules/monitoring.bicep"]
    assert "runtime: { name: 'python', version: '3.11' }" in BICEP["modules/functionapp.bicep"]
    assert "tier: 'FlexConsumption', name: 'FC1'" in BICEP["modules/functionapp.bicep"]


def test_queue_names_agree_across_infra_function_app_and_settings() -> None:
    main = BICEP["main.bicep"]
    queues = re.search(r"var queueNames = \[([^\]]*)\]", main)
    assert queues
    deployed = re.findall(r"'([^']+)'", queues.group(1))
    assert deployed == [DEFAULTS.onboarding_queue, DEFAULTS.steps_queue, DEFAULTS.notifications_queue]
    block = _block(BICEP["modules/functionapp.bicep"], "param queues object")
    assert "onboarding: 'onboarding', steps: 'steps', notifications: 'notifications'" in block
    app = (ROOT / "function_app.py").read_text()
    for setting in ("OnboardingQueueName", "StepsQueueName", "NotificationsQueueName"):
        assert f"%{setting}%" in app and setting in APP_SETTINGS
    for setting in ("SweepSchedule", "DeadLetterSchedule", "LifecycleSchedule"):
        assert f"%{setting}%" in app and setting in APP_SETTINGS


def test_lock_deliveries_and_duplicate_window_agree_with_the_engine_and_host_json() -> None:
    main = BICEP["main.bicep"]
    lock = re.search(r"lockDuration: '(PT\w+)'", main)
    deliveries = re.search(r"maxDeliveryCount: (\d+)", main)
    window = re.search(r"duplicateDetectionWindow: '(PT\w+)'", main)
    assert lock and deliveries and window
    assert _duration_s(lock.group(1)) == DEFAULTS.bus_lock_s == float(_setting("VENDING_BUS_LOCK_S"))
    assert int(deliveries.group(1)) == DEFAULTS.bus_max_deliveries == int(_setting("VENDING_BUS_MAX_DELIVERIES"))
    assert (
        _duration_s(window.group(1))
        == DEFAULTS.bus_duplicate_window_s
        == float(_setting("VENDING_BUS_DUPLICATE_WINDOW_S"))
    )
    bus = HOST["extensions"]["serviceBus"]
    assert bus["autoCompleteMessages"] is True  # settlement (handlers/queues.py) relies on it
    assert _hms_s(bus["maxAutoLockRenewalDuration"]) >= DEFAULTS.bus_lock_s
    assert _hms_s(HOST["functionTimeout"]) >= _hms_s(bus["maxAutoLockRenewalDuration"])
    servicebus = BICEP["modules/servicebus.bicep"]
    for required in ("requiresDuplicateDetection: true", "deadLetteringOnMessageExpiration: true", "name: 'Standard'"):
        assert required in servicebus


def test_table_names_agree_with_the_store() -> None:
    prefix = re.search(r"var tablePrefix = '(\w+)'", BICEP["main.bicep"])
    assert prefix and prefix.group(1) == DEFAULTS.tables_prefix
    storage = BICEP["modules/storage.bicep"]
    deployed = re.search(r"var tableNames = \[([^\]]*)\]", storage)
    assert deployed
    names = [n.replace("${tablePrefix}", prefix.group(1)) for n in re.findall(r"'([^']+)'", deployed.group(1))]
    assert sorted(names) == sorted(table_names(prefix.group(1)).values())


def test_every_module_referenced_exists_and_every_parameter_file_entry_is_a_parameter() -> None:
    for path, text in BICEP.items():
        for module in re.findall(r"^module \w+ '([^']+)'", text, re.M):
            assert (INFRA / Path(path).parent / module).is_file(), f"{path} uses missing module {module}"
        for loaded in re.findall(r"load(?:Text|Json)Content\('([^']+)'\)", text):
            assert (INFRA / Path(path).parent / loaded).is_file(), f"{path} loads missing {loaded}"
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = set(re.findall(r"^param (\w+)", BICEP["main.bicep"], re.M))
    assert set(params) <= declared
    azure = (ROOT / "azure.yaml").read_text()
    assert "path: infra" in azure and "module: main" in azure and "host: function" in azure


def test_every_role_guid_is_a_known_role_named_where_it_is_used() -> None:
    used: set[str] = set()
    for path, text in BICEP.items():
        for line in text.splitlines():
            for guid in GUID.findall(line):
                used.add(guid)
                assert guid in KNOWN_ROLES, f"{path}: {guid} is not a known built-in role"
                assert f"// {KNOWN_ROLES[guid]}" in line, f"{path}: {guid} must be commented with '{KNOWN_ROLES[guid]}'"
    planner = (ROOT / "engine" / "planner.py").read_text()
    granted = set(GUID.findall(planner))
    assert granted, "the planner grants roles"
    for guid in granted:
        assert f"# {KNOWN_ROLES[guid]}" in planner
    # The conditioned RBAC administrator may assign exactly the roles the access steps grant.
    assignable = re.search(r"var assignable = \[(.*?)\]", BICEP["modules/provisioning-roles.bicep"], re.S)
    assert assignable and set(GUID.findall(assignable.group(1))) == granted
    assert "conditionVersion: '2.0'" in BICEP["modules/provisioning-roles.bicep"]
    assert used >= set(KNOWN_ROLES) - granted


def test_the_workbook_and_the_alerts_are_deployed() -> None:
    assert "loadTextContent('../monitoring-workbook.json')" in BICEP["modules/monitoring.bicep"]
    alerts = BICEP["modules/alerts.bicep"]
    assert "metricName: 'DeadletteredMessages'" in alerts and "values: queueNames" in alerts
    assert "WorkspaceProvisioningFailed" in alerts
    assert "module alerts 'modules/alerts.bicep'" in BICEP["main.bicep"]


def test_easy_auth_stands_in_front_of_the_rest_routes_and_no_function_key_is_needed() -> None:
    app = BICEP["modules/functionapp.bicep"]
    auth = _block(app, "resource authentication 'config'")
    assert "name: 'authsettingsV2'" in auth
    assert "requireAuthentication: true" in auth and "unauthenticatedClientAction: 'Return401'" in auth
    excluded = re.search(r"excludedPaths: \[(.*?)\]", auth, re.S)
    assert excluded is not None
    paths = set(re.findall(r"'([^']+)'", excluded.group(1)))
    # Only chat (its own signatures), health, and the portal's pages and assets, which hold no data: every
    # other /api route stays behind Easy Auth.
    assert {p for p in paths if p.startswith("/api")} == {"/api/chat/*", "/api/health"}
    assert paths - {"/api/chat/*", "/api/health"} == {
        "/",
        "/new",
        "/approvals",
        "/signin",
        "/signout",
        "/workspaces/*",
        "/portal/*",
    }
    assert "tokenStore: { enabled: false }" in auth
    assert "openIdIssuer: '${environment().authentication.loginEndpoint}${authTenantId}/v2.0'" in auth
    assert "allowedAudiences: [authAudience, authClientId]" in auth
    assert _setting("VENDING_AUTH_MODE") == "easyauth"
    assert {"VENDING_AUTH_TENANT_ID", "VENDING_AUTH_CLIENT_ID", "VENDING_AUTH_AUDIENCE"} <= APP_SETTINGS
    assert "http_auth_level=func.AuthLevel.ANONYMOUS" in (ROOT / "function_app.py").read_text()
    # The portal is at / of the host: no route prefix, and no Functions home page in its place.
    assert json.loads((ROOT / "host.json").read_text())["extensions"]["http"]["routePrefix"] == ""
    assert _setting("AzureWebJobsDisableHomepage") == "true"
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["authClientId"]["value"] == "${VENDING_AUTH_CLIENT_ID}"
    assert "?code=" not in DEPLOY_DOC  # the Slack and Teams URLs carry no key


def test_the_callback_signing_secret_is_one_per_deployment_and_written_only_once() -> None:
    main, vault = BICEP["main.bicep"], BICEP["modules/keyvault.bicep"]
    assert "param callbackSigningSeed string = '${newGuid()}${newGuid()}'" in main
    assert "output VENDING_CALLBACK_SIGNING_SECRET_EXISTS bool = true" in main
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert params["callbackSigningSecretExists"]["value"] == "${VENDING_CALLBACK_SIGNING_SECRET_EXISTS=false}"
    assert "if (!empty(callbackSigningSecret) || !callbackSigningSecretExists)" in vault
    assert "VENDING_CALLBACK_SIGNING_SECRET" not in SECRET_SETTINGS  # read by the app, not a Key Vault reference
    assert "VENDING_CALLBACK_SIGNING_SECRET_URI: callbackSigningSecretUri" in BICEP["modules/functionapp.bicep"]
    assert "Key Vault Secrets User" in BICEP["modules/service-roles.bicep"]
