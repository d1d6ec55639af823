"""Pre-flight checks at intake: will this plan succeed in Azure? Quick, bounded, and off when unreachable.

Raw ARM REST calls through one kept urllib3 pool (`_Getter`), so the HTTP path never loads azure.ai.ml,
a management SDK or azure-core's pipeline: provider registration, storage and key vault name availability,
soft-deleted vaults holding a planned name, and Azure ML vCPU quota per VM family in the region.

It is also confinement's `ResourceReader` (engine/confinement.py): `read_resources` GETs the brought
resources and the planned workspace, so that their tags and existence are checked before anything is
created. Unlike the checks above it fails closed: no answer is a `TransientError`, never a pass.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloud.clients import CloudEndpoint
from engine.confinement import ArmResource
from engine.ports import PreflightReport
from models.errors import Problem, TransientError
from models.plan import KeyVaultSpec, Plan, StorageSpec
from models.policy import Policy
from models.request import ARM_ID, WorkspaceRequest
from models.settings import is_tls_or_loopback

log = logging.getLogger(__name__)

PROVIDERS_API = "2021-04-01"
STORAGE_API = "2023-05-01"
KEYVAULT_API = "2023-07-01"
ML_API = "2024-04-01"
# What azure-mgmt-applicationinsights 4.1 (components) and azure-mgmt-containerregistry 15 use in cloud/.
INSIGHTS_API = "2020-02-02"
REGISTRY_API = "2025-11-01"
# The GETs confinement makes, by resource type. Every response is a tracked resource whose `tags` is a
# map of strings (azure-rest-api-specs, common-types TrackedResource), as in the examples:
# - specification/storage/resource-manager/Microsoft.Storage/stable/2023-05-01/examples/StorageAccountGetProperties.json
# - specification/keyvault/resource-manager/Microsoft.KeyVault/stable/2023-07-01/examples/getVault.json
# - specification/applicationinsights/resource-manager/Microsoft.Insights/stable/2020-02-02/examples/ComponentsGet.json
#   (which shows `"tags": ""`: anything but an object is read as no tags)
# - specification/containerregistry/resource-manager/Microsoft.ContainerRegistry/Registry/examples/2025-11-01/RegistryGet.json
# - specification/machinelearningservices/resource-manager/Microsoft.MachineLearningServices/stable/2024-04-01/examples/Workspace/get.json
# A missing resource (or resource group) answers 404 (ResourceNotFound, ResourceGroupNotFound).
RESOURCE_APIS = {
    "microsoft.storage/storageaccounts": STORAGE_API,
    "microsoft.keyvault/vaults": KEYVAULT_API,
    "microsoft.insights/components": INSIGHTS_API,
    "microsoft.containerregistry/registries": REGISTRY_API,
    "microsoft.machinelearningservices/workspaces": ML_API,
}
NAMESPACES = {
    "storage": "Microsoft.Storage",
    "key-vault": "Microsoft.KeyVault",
    "insights": "Microsoft.Insights",
    "registry": "Microsoft.ContainerRegistry",
    "workspace": "Microsoft.MachineLearningServices",
}


# Usages_List (GET .../providers/Microsoft.MachineLearningServices/locations/{location}/usages), as in
# specification/machinelearningservices/resource-manager/Microsoft.MachineLearningServices/stable/2024-04-01/
# examples/Usage/list.json and the ListUsagesResult / Usage definitions (x-ms-pageable, nextLink): one entry
# per VM family and tier at subscription level ("Standard DSv2 Family Cluster Dedicated vCPUs"), regional
# totals ("Total Cluster Dedicated Regional vCPUs", "Total Cluster LowPriority Regional vCPUs"), and the same
# names again per workspace and per compute, whose ids carry /workspaces/. A limit of -1 (every per-family
# LowPriority entry there) means the family has no limit of its own: only the regional total applies.
DEDICATED_TOTAL = "Total Cluster Dedicated Regional vCPUs"
LOW_PRIORITY_TOTAL = "Total Cluster LowPriority Regional vCPUs"
NO_LIMIT = -1
MAX_USAGE_PAGES = 20


class UsageName(BaseModel):
    """A usage's name: `value` is what to match on."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    value: str = ""
    localized_value: str | None = Field(None, alias="localizedValue")


class Usage(BaseModel):
    """One entry of Usages_List."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: str = ""
    type: str = ""
    current_value: int = Field(0, alias="currentValue")
    limit: int = NO_LIMIT
    name: UsageName = Field(default_factory=UsageName)

    @property
    def subscription_level(self) -> bool:
        """True for the subscription's own count; False for the per-workspace and per-compute repeats."""
        return "/workspaces/" not in self.id.lower() and "workspace" not in self.type.lower()


class UsagePage(BaseModel):
    """One page of Usages_List."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    value: list[Usage] = Field(default_factory=list)
    next_link: str | None = Field(None, alias="nextLink")


class Demand(BaseModel):
    """vCPUs a request needs of one VM family and tier, and the compute entries that need them."""

    family: str
    low_priority: bool
    vcpus: int
    computes: list[int]


def _squash(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def family_usage_name(family: str, *, low_priority: bool) -> str:
    """Return the usage name of a VM family in squashed form (case, spaces and '_' dropped).

    The catalogue's family ("standardNCADSA100v4Family", as the VM sizes API names it) and the usage name
    ("Standard NCADS_A100_v4 Family Cluster Dedicated vCPUs") differ only in case, spaces and underscores.
    """
    return _squash(family) + ("clusterlowpriorityvcpus" if low_priority else "clusterdedicatedvcpus")


def quota_problems(usages: Sequence[Usage], demands: Sequence[Demand], location: str) -> list[Problem]:
    """Say which demands the subscription's usages in `location` cannot hold (subscription-level entries only)."""
    own = {_squash(u.name.value): u for u in usages if u.subscription_level and u.name.value}
    problems: list[Problem] = []
    checks: list[tuple[Usage, int, list[int]]] = []
    for tier_low in (False, True):
        tier = [d for d in demands if d.low_priority is tier_low]
        if not tier:
            continue
        for d in tier:
            if (family := own.get(family_usage_name(d.family, low_priority=tier_low))) is not None:
                checks.append((family, d.vcpus, d.computes))
        if (total := own.get(_squash(LOW_PRIORITY_TOTAL if tier_low else DEDICATED_TOTAL))) is not None:
            checks.append((total, sum(d.vcpus for d in tier), sorted({i for d in tier for i in d.computes})))
    for usage, need, where in checks:
        if usage.limit == NO_LIMIT or usage.current_value + need <= usage.limit:
            continue
        label = usage.name.localized_value or usage.name.value
        fields = ", ".join(f"compute[{i}]" for i in where)
        problems.append(
            Problem(
                f"compute[{where[0]}].max_nodes",
                f"{fields} need {need} vCPUs of '{label}' in {location}, but {usage.current_value} of {usage.limit} "
                "are in use; lower max_nodes, pick another VM size or region, or ask the platform team for more quota.",
                "QuotaExceeded",
            )
        )
    return problems


class Unreachable(Exception):
    """The cloud did not answer at all."""


class NoToken(Unreachable):
    """The credential gave no token for ARM (the managed identity, or the emulator's, is not available)."""


class Misconfigured(Unreachable):
    """No read can be made as the service is set up (a proxy it cannot use, ARM's endpoint not https)."""


class TimedOut(Unreachable):
    """The cloud did not answer within the check's time: the same as the checks' budget running out."""


def _timed_out(exc: BaseException) -> bool:
    """Say whether a transport error is a connect or read timeout (urllib3's, or the socket's under it)."""
    from urllib3.exceptions import TimeoutError as Urllib3Timeout

    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, TimeoutError | Urllib3Timeout):
            return True
        seen = getattr(seen, "inner_exception", None) or seen.__cause__ or seen.__context__
    return "timed out" in str(exc).lower()


# A token is asked for again this long before it expires (azure-core's BearerTokenCredentialPolicy: 300 s).
TOKEN_REFRESH_S = 300


class _Getter:
    """Intake's ARM calls (confinement's GETs, the pre-flight checks): one kept urllib3 pool and the ARM token.

    A read through azure-core's `ARMPipelineClient` cost about 1.8 ms of CPU on this machine, and one straight
    on urllib3 0.5 to 0.65 ms; a submission makes one, and pre-flight a few more. The pipeline's first call
    also paid its TLS set-up (about 100 ms here) on a submission. What the pipeline did for them is kept:
    - requests' trust: the `REQUESTS_CA_BUNDLE` or `CURL_CA_BUNDLE` bundle (a file or a folder), else
      certifi's; the emulator's bundle when given; loaded once, not per connection, for ARM and for an
      https proxy alike;
    - requests' proxy from the environment (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`; a proxy without a
      scheme is http; basic credentials in its URL are sent on the CONNECT);
    - the token sent over TLS only (plain http to loopback alone, for tests), asked for again 300 s
      before it expires, and once when ARM refuses it (401) with the challenge's claims, as azure-core's
      BearerTokenCredentialPolicy does.
    The urllib3 instrumentation still traces each read as a dependency (adapters/telemetry.py).
    """

    def __init__(self, endpoint: CloudEndpoint, credential: Any, *, connections: int) -> None:
        import os
        import ssl
        from urllib.parse import unquote, urlsplit

        import certifi
        import urllib3
        from requests.utils import get_environ_proxies, prepend_scheme_if_needed, select_proxy

        self.endpoint = endpoint
        self.credential = credential
        self._token: Any = None
        self._lock = threading.Lock()
        # Why no call can be made at all (a token that would travel in the clear, a proxy this process cannot
        # use), else empty: decided once, here, not on every call.
        self._refused = (
            ""
            if is_tls_or_loopback(endpoint.arm_url)
            else f"{endpoint.arm_url} is not https, and the ARM token is never sent in the clear"
        )
        bundle = endpoint.ca_bundle or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        bundle = bundle or certifi.where()
        context = (
            ssl.create_default_context(capath=bundle)
            if os.path.isdir(bundle)
            else ssl.create_default_context(cafile=bundle)
        )
        kw: dict[str, Any] = {"maxsize": connections, "retries": False, "ssl_context": context}
        self._http: Any = urllib3.PoolManager(**kw)
        proxy = select_proxy(endpoint.arm_url, get_environ_proxies(endpoint.arm_url))
        if proxy:
            proxy = prepend_scheme_if_needed(proxy, "http")
            parts = urlsplit(proxy)
            if parts.scheme.startswith("socks"):
                self._refused = (
                    f"the proxy {parts.hostname}:{parts.port} is a SOCKS proxy, which this service does not support; "
                    "name an http or https proxy in HTTPS_PROXY"
                )
                return
            if parts.username:
                credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
                kw["proxy_headers"] = urllib3.make_headers(proxy_basic_auth=credentials)
            self._http = urllib3.ProxyManager(proxy, proxy_ssl_context=context, **kw)

    def _bearer(self, *, rejected: str | None = None, claims: str | None = None) -> str:
        """Return the token to send; with `rejected`, a new one unless another thread has already replaced it."""
        with self._lock:
            token = self._token
            stale = token is None or token.expires_on - time.time() < TOKEN_REFRESH_S
            if stale or (rejected is not None and token.token == rejected):
                try:
                    kw = {"claims": claims} if claims else {}
                    token = self._token = self.credential.get_token(self.endpoint.scope, **kw)
                except Exception as exc:
                    if token is not None and rejected is None and token.expires_on > time.time():
                        # An early refresh that failed: the token in hand is still good until it expires.
                        log.warning("the ARM token could not be refreshed early; using the current one: %s", exc)
                    else:
                        log.warning("no token for Azure Resource Manager: %s", exc)
                        raise NoToken(type(exc).__name__) from exc
        return str(token.token)

    def get(self, path: str, api: str, timeout: float) -> tuple[int, Any]:
        """GET `path` at `api`: the status and the JSON body (None when there is none); `Unreachable`, `TimedOut`."""
        return self.call("GET", self.url(path, api), timeout)

    def url(self, path: str, api: str) -> str:
        """Return the URL of ARM's `path` at `api`."""
        return f"{self.endpoint.arm_url.rstrip('/')}{path}?api-version={api}"

    def call(self, method: str, url: str, timeout: float, body: Any = None) -> tuple[int, Any]:
        """Send `method` to `url` (a JSON `body`, if any): the status and the JSON answer; `Unreachable`, `TimedOut`."""
        if self._refused:
            raise Misconfigured(self._refused)
        token = self._bearer()
        status, data, challenge = self._send(method, url, timeout, body, token)
        if status == 401:  # revoked, or claims to add (continuous access evaluation): a new token, once
            status, data, _ = self._send(method, url, timeout, body, self._bearer(rejected=token, claims=challenge))
        return status, data

    def _send(self, method: str, url: str, timeout: float, body: Any, token: str) -> tuple[int, Any, str | None]:
        import urllib3

        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "x-ms-client-request-id": str(uuid.uuid4()),  # what ARM's support asks for about one call
        }
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for fresh in (False, True):
            try:
                resp = self._http.request(
                    method,
                    url,
                    body=payload,
                    headers=headers,
                    timeout=urllib3.Timeout(connect=timeout, read=timeout),
                    redirect=False,
                )
                break
            except urllib3.exceptions.NewConnectionError as exc:  # refused, or no such host (a ConnectTimeoutError)
                raise Unreachable(str(exc)) from exc
            except urllib3.exceptions.TimeoutError as exc:
                raise TimedOut(str(exc)) from exc
            except urllib3.exceptions.ProtocolError as exc:
                # A kept connection the server closed as it was reused ("Remote end closed connection without
                # response"): nothing was answered, and every call here is a read (GETs, and POSTs that only
                # ask, such as checkNameAvailability), so it is sent once more, on a new connection.
                if fresh:
                    raise (TimedOut if _timed_out(exc) else Unreachable)(str(exc)) from exc
            except urllib3.exceptions.HTTPError as exc:
                raise (TimedOut if _timed_out(exc) else Unreachable)(str(exc)) from exc
        try:
            data = json.loads(resp.data) if resp.data else None
        except ValueError:
            data = None
        return resp.status, data, _claims(resp.headers.get("WWW-Authenticate", "")) if resp.status == 401 else None


def _claims(challenge: str) -> str | None:
    """Return the claims an `insufficient_claims` challenge asks for, decoded, or None.

    Microsoft Learn, "Claims challenges, claims requests and client capabilities"
    (https://learn.microsoft.com/entra/identity-platform/claims-challenge): a 401 whose
    `WWW-Authenticate: Bearer ...` carries `error="insufficient_claims"` and `claims="<base64 JSON>"`; the
    client asks for a new token with those claims.
    """
    import base64
    import re

    if "insufficient_claims" not in challenge:
        return None
    found = re.search(r'claims="([^"]+)"', challenge)
    if found is None:
        return None
    encoded = found.group(1)
    try:
        plain = encoded.rstrip("=").replace("-", "+").replace("_", "/")  # either alphabet, with or without padding
        return base64.b64decode(plain + "=" * (-len(plain) % 4), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None


class ArmPreflight:
    """`Preflight` against ARM (or the emulator)."""

    def __init__(self, endpoint: CloudEndpoint, credential: Any) -> None:
        self.endpoint = endpoint
        self.credential = credential
        self._getter = _Getter(endpoint, credential, connections=64)
        # Confinement's reads (one GET each) share one pool whose threads are kept: a pool per call started a
        # thread per read, about 1.2 ms each, a seventh of intake's own time. A submission still waits no longer
        # than its budget; a read that outlives it holds its thread until its HTTP timeouts (connect and read,
        # each the budget) end it. When ARM is that slow every submission's reads time out alike and
        # confinement fails closed (503), so sharing the pool couples nothing that was not coupled. The
        # pre-flight checks keep a pool per call: they make several calls each, and one request's slow checks
        # must not make another's be skipped.
        self._reads = ThreadPoolExecutor(max_workers=64, thread_name_prefix="confinement")

    def _call(
        self, method: str, path: str, api: str, timeout: float, body: Any = None, *, url: str | None = None
    ) -> tuple[int, Any]:
        return self._getter.call(method, url or self._getter.url(path, api), timeout, body)

    def check(self, *, plan: Plan, request: WorkspaceRequest, policy: Policy) -> PreflightReport:
        """Run every check in parallel; whatever has not answered by the timeout is reported as skipped."""
        timeout = policy.preflight.timeout_s
        checks: dict[str, Callable[[], tuple[list[Problem], list[Problem]]]] = {
            "resource providers": lambda: self._providers(plan, timeout),
            "storage account name": lambda: self._storage_name(plan, timeout),
            "key vault name": lambda: self._vault_name(plan, policy, timeout),
            "vCPU quota": lambda: self._quota(plan, request, policy, timeout),
        }
        problems: list[Problem] = []
        notes: list[Problem] = []
        skipped: list[str] = []
        pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="preflight")
        # Each check runs in the caller's context, so its ARM calls belong to the request's trace.
        futures = {pool.submit(contextvars.copy_context().run, fn): name for name, fn in checks.items()}
        done, pending = wait(futures, timeout=timeout)
        pool.shutdown(wait=False, cancel_futures=True)
        for future in done:
            name = futures[future]
            try:
                found, noted = future.result()
            except TimedOut:
                skipped.append(f"{name}: no answer within {timeout:g} s")
                continue
            except Unreachable as exc:
                skipped.append(f"{name}: the cloud did not answer ({exc.__class__.__name__})")
                continue
            except Exception as exc:  # noqa: BLE001 - a broken check must not block intake
                log.warning("pre-flight check %s failed: %s", name, exc)
                skipped.append(f"{name}: {exc}")
                continue
            problems += found
            notes += noted
        skipped += [f"{futures[f]}: no answer within {timeout:g} s" for f in pending]
        return PreflightReport(problems=problems, notes=notes, skipped=skipped)

    def read_resources(self, resource_ids: Sequence[str], *, timeout_s: float) -> dict[str, ArmResource | None]:
        """GET the resources in parallel; None where ARM answers 404; `TransientError` if any is not read in time."""
        ids = list(dict.fromkeys(resource_ids))
        if not ids:
            return {}
        futures = {self._reads.submit(contextvars.copy_context().run, self._read, rid, timeout_s): rid for rid in ids}
        done, pending = wait(futures, timeout=timeout_s)
        for future in pending:
            future.cancel()  # not started yet: it never will be
        if pending:
            raise TransientError(
                f"Azure Resource Manager did not answer within {timeout_s:g} s, so the resources this request "
                "names could not be checked; try again shortly.",
                code="ConfinementUnchecked",
            )
        return {futures[f]: f.result() for f in done}

    def _read(self, rid: str, timeout: float) -> ArmResource | None:
        m = ARM_ID.match(rid)
        api = RESOURCE_APIS.get(m["type"].lower()) if m else None
        if api is None:
            raise ValueError(f"confinement does not read resources like {rid}")
        try:
            status, data = self._getter.get(rid, api, timeout)
        except NoToken as exc:
            raise TransientError(
                f"the service could not get a token for Azure Resource Manager to check {rid}; try again shortly, "
                "or ask the platform team to check the service's managed identity (its log says why) if this persists.",
                code="ConfinementUnchecked",
            ) from exc
        except Misconfigured as exc:
            raise TransientError(
                f"Azure Resource Manager cannot be asked about {rid} as the service is set up: {exc}. Ask the "
                "platform team to mend the service's settings.",
                code="ConfinementUnchecked",
            ) from exc
        except Unreachable as exc:
            log.warning("confinement could not read %s: %s", rid, exc)
            raise TransientError(
                f"Azure Resource Manager could not be reached to check {rid}; try again shortly.",
                code="ConfinementUnchecked",
            ) from exc
        if status == 404:
            return None
        if status != 200 or not isinstance(data, dict):
            raise TransientError(
                f"Azure Resource Manager answered {status} when asked for {rid}, so it could not be checked; "
                "try again shortly, or ask the platform team if this persists.",
                code="ConfinementUnchecked",
            )
        tags = data.get("tags")
        clean = {str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {}
        return ArmResource(id=str(data.get("id") or rid), tags=clean)

    # ----- the checks ----------------------------------------------------------------------

    def _providers(self, plan: Plan, timeout: float) -> tuple[list[Problem], list[Problem]]:
        # Providers_Get (specification/resources/resource-manager/Microsoft.Resources/stable/2021-04-01/
        # resources.json): registrationState is NotRegistered, Registering, Registered or Unregistering.
        # Registering is on its way (usually minutes), and Microsoft's guidance is not to block on it
        # (https://learn.microsoft.com/azure/azure-resource-manager/management/resource-providers-and-types):
        # a note (a warning on the record), not a refusal.
        sub = plan.names.subscription_id
        needed = sorted(
            {NAMESPACES[s.kind.value] for s in plan.steps if s.kind.value in NAMESPACES}
            | ({"Microsoft.OperationalInsights"} if any(s.id == "insights" for s in plan.steps) else set())
        )
        problems, notes = [], []
        for ns in needed:
            status, data = self._call("GET", f"/subscriptions/{sub}/providers/{ns}", PROVIDERS_API, timeout)
            state = str((data or {}).get("registrationState", "")) if status == 200 else ""
            if status != 200 or state.lower() == "registered":
                continue
            if state.lower() == "registering":
                notes.append(
                    Problem(
                        "subscription_id",
                        f"subscription {sub} is still registering {ns} (this usually takes minutes); the request "
                        "goes ahead; a step that starts before registration ends fails with "
                        "MissingSubscriptionRegistration, and the request is then submitted again once it has ended.",
                        "SubscriptionRegistering",
                    )
                )
                continue
            problems.append(
                Problem(
                    "subscription_id",
                    f"subscription {sub} is not registered for {ns} ({state}); the platform team must register it "
                    f"(az provider register --namespace {ns}).",
                    "MissingSubscriptionRegistration",
                )
            )
        return problems, notes

    def _exists(self, rid: str, api: str, timeout: float) -> bool:
        status, _ = self._call("GET", rid, api, timeout)
        return status == 200

    def _storage_name(self, plan: Plan, timeout: float) -> tuple[list[Problem], list[Problem]]:
        step = plan.step("storage")
        if step.spec_as(StorageSpec).existing or self._exists(step.resource_id, STORAGE_API, timeout):
            return [], []
        sub = plan.names.subscription_id
        status, data = self._call(
            "POST",
            f"/subscriptions/{sub}/providers/Microsoft.Storage/checkNameAvailability",
            STORAGE_API,
            timeout,
            {"name": step.resource_name, "type": "Microsoft.Storage/storageAccounts"},
        )
        if status == 200 and data and not data.get("nameAvailable", True):
            return [
                Problem(
                    "existing.storage_account_id",
                    f"the storage account name '{step.resource_name}' is taken elsewhere in Azure (names are global); "
                    "bring your own storage account, or use another team name.",
                    "StorageAccountAlreadyTaken",
                )
            ], []
        return [], []

    def _vault_name(self, plan: Plan, policy: Policy, timeout: float) -> tuple[list[Problem], list[Problem]]:
        step = plan.step("key-vault")
        if step.spec_as(KeyVaultSpec).existing or self._exists(step.resource_id, KEYVAULT_API, timeout):
            return [], []
        sub, name, loc = plan.names.subscription_id, step.resource_name, plan.names.location
        status, data = self._call(
            "GET",
            f"/subscriptions/{sub}/providers/Microsoft.KeyVault/locations/{loc}/deletedVaults/{name}",
            KEYVAULT_API,
            timeout,
        )
        if status == 200:
            action = policy.key_vault.on_soft_deleted
            purge_date = ((data or {}).get("properties") or {}).get("scheduledPurgeDate", "?")
            holder = f"a soft-deleted key vault holds the name '{name}' until {purge_date}"
            if action == "fail":
                return [
                    Problem(
                        "existing.key_vault_id",
                        f"{holder}; recover or purge it, then submit again.",
                        "VaultSoftDeleted",
                    )
                ], []
            verb = {
                "recover": "recovered",
                "purge": "purged and created again",
                "rename": "side-stepped with a fresh name",
            }
            return [], [
                Problem("existing.key_vault_id", f"{holder}; it will be {verb[action]} (policy).", "VaultSoftDeleted")
            ]
        status, data = self._call(
            "POST",
            f"/subscriptions/{sub}/providers/Microsoft.KeyVault/checkNameAvailability",
            KEYVAULT_API,
            timeout,
            {"name": name, "type": "Microsoft.KeyVault/vaults"},
        )
        if status == 200 and data and not data.get("nameAvailable", True):
            return [
                Problem(
                    "existing.key_vault_id",
                    f"the key vault name '{name}' is taken elsewhere in Azure (names are global); bring your own key vault, "
                    "or use another team name.",
                    "VaultAlreadyExists",
                )
            ], []
        return [], []

    def _quota(
        self, plan: Plan, request: WorkspaceRequest, policy: Policy, timeout: float
    ) -> tuple[list[Problem], list[Problem]]:
        demands: dict[tuple[str, bool], Demand] = {}
        for i, c in enumerate(request.compute):
            size = policy.vm_size(c.vm_size)
            if size is None:
                continue
            low = c.tier == "low_priority"
            d = demands.setdefault(
                (size.family, low), Demand(family=size.family, low_priority=low, vcpus=0, computes=[])
            )
            d.vcpus += size.vcpus * (1 if c.kind == "instance" else c.max_nodes)
            d.computes.append(i)
        if not demands:
            return [], []
        sub, loc = plan.names.subscription_id, plan.names.location
        usages = self._usages(
            f"/subscriptions/{sub}/providers/Microsoft.MachineLearningServices/locations/{loc}/usages", timeout
        )
        if usages is None:
            return [], []
        return quota_problems(usages, list(demands.values()), loc), []

    def _usages(self, path: str, timeout: float) -> list[Usage] | None:
        """Read every page of Usages_List; None when ARM does not answer 200 (the check is then skipped)."""
        out: list[Usage] = []
        url: str | None = None
        for _ in range(MAX_USAGE_PAGES):
            status, data = self._call("GET", path, ML_API, timeout, url=url)
            if status != 200 or not isinstance(data, dict):
                return None
            page = UsagePage.model_validate(data)
            out += page.value
            # Only ARM's own host gets the bearer token: a next link elsewhere is not followed.
            if not page.next_link or not page.next_link.startswith(self.endpoint.arm_url.rstrip("/") + "/"):
                return out
            url = page.next_link
        return out
