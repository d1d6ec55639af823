"""Azure error translation, in one table: each error is transient (retry) or permanent (explain).

Permanent errors carry a sentence that tells the requester or the platform team what to do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from models.errors import PermanentError, TransientError, VendingError


@dataclass(frozen=True)
class Rule:
    """How one Azure error code is handled."""

    transient: bool
    advice: str = ""


# Keyed by the ARM error code, lowercase. Advice is said after what failed and Azure's own message.
RULES: dict[str, Rule] = {
    # Transient: clears by itself.
    "toomanyrequests": Rule(True, "ARM is throttling; retrying after the time it asked for."),
    "subscriptionrequeststhrottled": Rule(True, "ARM is throttling the subscription; retrying."),
    "conflict": Rule(True, "another operation on the resource is in progress; retrying."),
    "anotheroperationinprogress": Rule(True, "another operation on the resource is in progress; retrying."),
    "operationnotallowed": Rule(True, "the resource is busy with another operation; retrying."),
    "resourcegroupbeingdeleted": Rule(True, "the resource group is being deleted; retrying until it is gone."),
    "internalservererror": Rule(True, "Azure had an internal error; retrying."),
    "serviceunavailable": Rule(True, "the Azure service is unavailable; retrying."),
    "gatewaytimeout": Rule(True, "the Azure service timed out; retrying."),
    "principalnotfound": Rule(
        True, "the principal is not visible to Azure RBAC yet (new principals take minutes to propagate); retrying."
    ),
    "resourcenotfound": Rule(True, "a resource this one needs is not visible yet; retrying."),
    # A create ARM accepted that ended in provisioning state Failed and said no more (Microsoft Learn,
    # "Troubleshoot common Azure deployment errors": ResourceDeploymentFailure).
    "resourcedeploymentfailure": Rule(
        True, "the resource ended in provisioning state Failed without saying why; applying it again."
    ),
    "parentresourcenotfound": Rule(True, "the parent resource is not visible yet; retrying."),
    # Permanent: a person must act.
    "quotaexceeded": Rule(
        False, "Ask the platform team to raise the subscription's quota, or request fewer or smaller nodes."
    ),
    "operationnotallowedquota": Rule(
        False, "Ask the platform team to raise the vCPU quota for this VM family in this region."
    ),
    # The three storage name conflicts, as Microsoft Learn "Resolve errors for storage account names" tells them apart.
    "storageaccountalreadytaken": Rule(
        False,
        "Storage account names are global and another subscription or Azure customer holds this one; set another "
        "team name or environment, or bring your own storage account.",
    ),
    "storageaccountinanotherresourcegroup": Rule(
        False,
        "A storage account with this name already exists in another resource group of this subscription; bring it "
        "as your own storage account (its id), delete it, or set another team name or environment.",
    ),
    "invalidresourcelocation": Rule(
        False,
        "A resource with this name already exists in this resource group in another region, and a resource cannot "
        "move region; request the region it is in, delete it first, or set another team name or environment.",
    ),
    "storageaccountalreadyexists": Rule(
        False,
        "The storage account exists in another resource group; bring it as an existing resource or pick another name.",
    ),
    "vaultalreadyexists": Rule(
        False,
        "Key vault names are global; a vault (perhaps soft-deleted) holds this name. Purge it or bring your own key vault.",
    ),
    "softdeletedworkspace": Rule(
        False,
        "A soft-deleted Azure ML workspace holds this name; purge it (az ml workspace delete --permanently-delete) or ask the platform team to set workspace.on_soft_deleted to purge, then submit again.",
    ),
    "conflicterror": Rule(False, "A soft-deleted resource holds this name; recover or purge it, then submit again."),
    "roleassignmentexists": Rule(
        False, "The principal already holds this role at this scope under another assignment; nothing is missing."
    ),
    "alreadyinuse": Rule(False, "The name is taken globally; bring your own resource or change the team name."),
    "authorizationfailed": Rule(
        False, "The service's identity lacks permission on this scope; the platform team must grant it."
    ),
    "linkedauthorizationfailed": Rule(
        False, "The service's identity lacks permission on a linked resource; the platform team must grant it."
    ),
    "authenticationfailed": Rule(
        False, "The service could not authenticate to Azure; the platform team must check its identity."
    ),
    "invalidauthenticationtokentenant": Rule(
        False,
        "The subscription is in another tenant than the service's identity; use a subscription of the service's tenant.",
    ),
    "requestdisallowedbypolicy": Rule(
        False, "An Azure Policy assignment denies this resource; ask the platform team which policy and how to comply."
    ),
    "invalidresourcename": Rule(
        False, "The resource name breaks Azure's naming rules; change the name in the request."
    ),
    "accountnameinvalid": Rule(
        False, "The storage account name breaks Azure's naming rules; change the name in the request."
    ),
    "resourcegroupnotfound": Rule(
        False,
        "The resource group does not exist and this environment is not allowed to create it; ask the platform team to create it.",
    ),
    "missingsubscriptionregistration": Rule(
        False,
        "The subscription is not registered for this resource provider; the platform team must register it (az provider register).",
    ),
    "linkedinvalidpropertyid": Rule(
        False, "A linked resource id is not valid; check the existing resource ids in the request."
    ),
    "invalidtemplate": Rule(False, "The deployment template was refused; this is a bug in the service: report it."),
    "invalidtemplatedeployment": Rule(False, "The deployment was refused before it ran; see the details."),
    "deploymentfailed": Rule(False, "The deployment failed; see the details."),
    "subscriptionnotfound": Rule(
        False, "The subscription does not exist or the service cannot see it; check subscription_id."
    ),
    "locationnotavailableforresourcetype": Rule(
        False, "This resource type is not offered in the region; pick another region."
    ),
    "skunotavailable": Rule(
        False, "The VM size or SKU is not offered in this region for this subscription; pick another size or region."
    ),
    # ARM answers 409 ScopeLocked when a CanNotDelete (delete) or ReadOnly (any write) management lock on the
    # resource or a scope above it forbids the call (Microsoft Learn, "Lock your resources to protect your
    # infrastructure"). Teardown names the lock and what to do (cloud.teardown.lock_failure).
    "scopelocked": Rule(
        False, "A management lock on the resource or a scope above it forbids this; remove the lock, then try again."
    ),
    "badrequest": Rule(False, "Azure refused the request as invalid; see the message."),
    "invalidrequestcontent": Rule(False, "Azure refused the request body; this is a bug in the service: report it."),
    "unsupportedaction": Rule(False, "Azure does not support this action here."),
    "noregisteredproviderfound": Rule(False, "The resource type or API version is not available in this cloud."),
}

TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}

# A wrapped error's code is often the HTTP status name the resource provider answered with
# (System.Net.HttpStatusCode names, as ARM writes them in a deployment's details).
STATUS_NAMES = {
    "requesttimeout": 408,
    "toomanyrequests": 429,
    "internalservererror": 500,
    "badgateway": 502,
    "serviceunavailable": 503,
    "gatewaytimeout": 504,
}
MAX_ERROR_DEPTH = 8

# Codes that only wrap the errors in their `details` (Microsoft Learn, "Troubleshoot common Azure deployment errors").
WRAPPERS = {"deploymentfailed", "invalidtemplatedeployment", "resourcedeploymentfailure"}


@dataclass(frozen=True)
class ErrorDetail:
    """One ARM error: its code, its message and the errors it wraps.

    ARM wraps what a resource provider said: a deployment's `error` (ErrorResponse, Microsoft.Resources
    deployments spec, api-version 2020-06-01 as azure-ai-ml sends) is DeploymentFailed, whose `details`
    carry the RP's HTTP status name (Conflict, BadRequest, NotFound) with the RP's own JSON body as the
    message, or, for a create that ended Failed, ResourceDeploymentFailure with its own nested `details`.
    """

    code: str
    message: str
    details: tuple[ErrorDetail, ...] = ()

    @classmethod
    def of(cls, error: object) -> ErrorDetail:
        """Read an SDK error model (anything with code, message and details)."""
        nested = tuple(cls.of(d) for d in (getattr(error, "details", None) or []))
        code, message = getattr(error, "code", None), getattr(error, "message", None)
        return cls(str(code or ""), str(message or ""), nested)

    @classmethod
    def parse(cls, text: str) -> ErrorDetail | None:
        """Read an error from JSON text: `{"error": {...}}`, an operation's `{"status", "error"}`, or the error."""
        if not text.lstrip().startswith("{"):
            return None
        try:
            return cls.from_json(json.loads(text))
        except (ValueError, RecursionError):
            return None

    @classmethod
    def from_json(cls, value: object) -> ErrorDetail | None:
        """Read an error from parsed JSON (None when it holds no error code)."""
        if not isinstance(value, dict):
            return None
        # Resource providers spell the keys as they like inside a message (Code, Message, Details).
        value = {str(k).lower(): v for k, v in value.items()}
        inner = value["error"] if isinstance(value.get("error"), dict) else value
        inner = {str(k).lower(): v for k, v in inner.items()}
        code = inner.get("code")
        if not isinstance(code, str) or not code:
            return None
        details = inner.get("details")
        nested = tuple(
            d for d in (cls.from_json(x) for x in (details if isinstance(details, list) else [])) if d is not None
        )
        return cls(code, str(inner.get("message") or ""), nested)

    def innermost(self, depth: int = 0) -> list[ErrorDetail]:
        """Return the errors at the bottom: JSON inside a message is opened, wrappers' details followed.

        At most `MAX_ERROR_DEPTH` levels: past that the error is taken as it stands.
        """
        if depth >= MAX_ERROR_DEPTH:
            return [self]
        inside = self.parse(self.message)
        if inside is not None:
            return inside.innermost(depth + 1)
        if self.details and (self.code.lower() in WRAPPERS or not self.message):
            return [leaf for d in self.details for leaf in d.innermost(depth + 1)]
        return [self]


def classify_wrapped(error: ErrorDetail | None, *, what: str, status: int | None = None) -> VendingError:
    """Classify the innermost errors of a wrapped ARM error: permanent if any of them is, else the first."""
    leaves = error.innermost() if error is not None else []
    if not leaves:
        return classify("DeploymentFailed", "the deployment failed without details", what=what, status=status)
    found = [classify(leaf.code, leaf.message, what=what, status=status) for leaf in leaves]
    return next((e for e in found if isinstance(e, PermanentError)), found[0])


def _code_and_message(exc: Any) -> tuple[str, str]:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or ""
    message = getattr(error, "message", None) or ""
    if not code:
        response = getattr(exc, "response", None)
        try:
            body = json.loads(response.text()) if response is not None else {}
            err = body.get("error") or {}
            code, message = err.get("code", ""), err.get("message", "")
        except (ValueError, AttributeError, TypeError):
            pass
    if not message:
        message = str(getattr(exc, "message", "") or exc).split("\n")[0]
    return code, message


# The longest wait an answer may ask for: ARM's RPC caps Retry-After at 10 minutes (v1.0/async-api-reference.md,
# "202 Accepted and Location Headers"). Longer, infinite or negative values are a broken or hostile endpoint's.
MAX_RETRY_AFTER_S = 600.0


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Read how long an answer asks to wait: Retry-After in seconds, else x-ms-retry-after-ms.

    None when neither is there or readable (an HTTP date included: ARM sends seconds); at most
    `MAX_RETRY_AFTER_S`, and never negative.
    """
    for name in ("Retry-After", "retry-after", "x-ms-retry-after-ms"):
        value = (headers or {}).get(name)
        if value:
            try:
                seconds = float(value) / (1000 if name.endswith("-ms") else 1)
            except ValueError:
                return None
            if not math.isfinite(seconds) or seconds < 0:
                return None
            return min(seconds, MAX_RETRY_AFTER_S)
    return None


def _retry_after(exc: Any) -> float | None:
    return retry_after_s(getattr(getattr(exc, "response", None), "headers", None))


def classify(
    code: str, message: str, *, what: str, status: int | None = None, retry_after: float | None = None
) -> VendingError:
    """Translate an Azure error code (and HTTP status) into our transient or permanent error."""
    rule = RULES.get(code.lower())
    if rule is None and status is None:
        status = STATUS_NAMES.get(code.lower())
    if rule is None and (code.lower().startswith("retryable") or code.lower() == "canceled"):
        # RetryableError; Canceled: a deployment ARM cancelled (e.g. for a newer one). Again, within the budget.
        rule = Rule(True)
    if code.lower() in ("badrequest", "") and "soft-deleted workspace" in message.lower():
        rule = RULES["softdeletedworkspace"]
    elif code.lower() in ("operationnotallowed", "badrequest", "") and "quota" in message.lower():
        rule = RULES["operationnotallowedquota"]  # Azure ML says quota in a BadRequest's message
    if rule is None:
        rule = Rule(status in TRANSIENT_STATUS) if status is not None else Rule(False)
    text = f"{what} failed: {code or status or 'error'}: {message}".rstrip(": .")
    if rule.transient:
        return TransientError(
            f"{text} ({rule.advice})" if rule.advice else text, retry_after_s=retry_after, code=code or f"HTTP{status}"
        )
    advice = rule.advice or "See Azure's message; if it is unclear, ask the platform team."
    return PermanentError(f"{text}. {advice}", code=code or f"HTTP{status}")


def translate(exc: Exception, *, what: str) -> VendingError:
    """Translate an exception from an Azure SDK into our error hierarchy."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, VendingError):
        return exc
    if isinstance(exc, ClientAuthenticationError) and getattr(exc, "status_code", None) is None:
        return PermanentError(
            f"{what} failed: could not get a token: {str(exc).splitlines()[0]}. "
            "The platform team must check the service's identity.",
            code="AuthenticationFailed",
        )
    if isinstance(exc, (ServiceRequestError, ServiceResponseError, TimeoutError, ConnectionError)):
        return TransientError(
            f"{what} failed: could not reach Azure ({type(exc).__name__}); retrying.", code="NetworkError"
        )
    if isinstance(exc, HttpResponseError):
        code, message = _code_and_message(exc)
        error = getattr(exc, "error", None)
        if code.lower() in WRAPPERS and getattr(error, "details", None):
            return classify_wrapped(ErrorDetail.of(error), what=what, status=exc.status_code)
        return classify(code, message, what=what, status=exc.status_code, retry_after=_retry_after(exc))
    name = type(exc).__name__
    if name in ("ValidationException", "UserErrorException"):
        return PermanentError(f"{what} failed: {str(exc).splitlines()[0]}", code="InvalidConfiguration")
    return TransientError(f"{what} failed unexpectedly: {name}: {str(exc)[:300]}", code="InternalError")


def is_not_found(exc: Exception) -> bool:
    """Tell whether an Azure SDK error is a 404."""
    from azure.core.exceptions import ResourceNotFoundError

    return isinstance(exc, ResourceNotFoundError) or getattr(exc, "status_code", None) == 404
