"""ARM template expressions, as the emulator evaluates them for azure-ai-ml's workspace template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emulator.templates import Scope, TemplateError, evaluate, expand, parse, resolve


def _scope(**params: object) -> Scope:
    def reference(rid: str) -> dict:
        raise TemplateError(f"looked up {rid}")

    return Scope("sub", "rg", "westeurope", "tenant", dict(params), reference=reference)


def test_functions_and_property_access() -> None:
    s = _scope(name="ws", kind="Default", tags={"a": "b"})
    assert evaluate(parse("concat(parameters('name'), '-', 'x')"), s) == "ws-x"
    assert evaluate(parse("resourceId('Microsoft.Storage/storageAccounts', 'st1')"), s) == (
        "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st1"
    )
    assert evaluate(parse("resourceId('s2', 'rg2', 'Microsoft.Web/sites/slots', 'a', 'b')"), s) == (
        "/subscriptions/s2/resourceGroups/rg2/providers/Microsoft.Web/sites/a/slots/b"
    )
    assert evaluate(parse("subscription().subscriptionId"), s) == "sub"
    assert evaluate(parse("toLower(parameters('kind'))"), s) == "default"
    assert evaluate(parse("parameters('tags')['a']"), s) == "b"
    assert evaluate(parse("json('null')"), s) is None
    assert evaluate(parse("equals('it''s', 'it''s')"), s) is True
    assert evaluate(parse("uniqueString('a')"), s) == evaluate(parse("uniqueString('a')"), s)
    assert len(evaluate(parse("uniqueString('a')"), s)) == 13


def test_if_and_or_are_lazy() -> None:
    s = _scope(flag="none")
    assert evaluate(parse("if(equals(parameters('flag'), 'none'), 'x', reference('id').y)"), s) == "x"
    assert evaluate(parse("and(false(), reference('id'))"), s) is False
    with pytest.raises(TemplateError, match="looked up"):
        evaluate(parse("if(true(), reference('id').y, 'x')"), s)


def test_escaped_brackets_and_unknown_functions() -> None:
    s = _scope()
    assert resolve("[[not an expression]", s) == "[not an expression]"
    with pytest.raises(TemplateError, match="does not support"):
        resolve("[frobnicate()]", s)


def test_azure_ai_ml_workspace_template_deploys_one_workspace() -> None:
    import azure.ai.ml

    templates = Path(azure.ai.ml.__file__).parent / "_arm_deployments" / "arm_templates"
    template = json.loads((templates / "workspace_base.json").read_text())
    params = json.loads((templates / "workspace_param.json").read_text())
    for key, value in {
        "workspaceName": "mlw-a",
        "location": "westeurope",
        "resourceGroupName": "rg",
        "storageAccountOption": "existing",
        "storageAccountName": "st1",
        "storageAccountResourceGroupName": "rg",
        "storageAccountSubscriptionId": "sub",
        "keyVaultOption": "existing",
        "keyVaultName": "kv1",
        "keyVaultResourceGroupName": "rg",
        "applicationInsightsOption": "existing",
        "applicationInsightsName": "ai1",
        "applicationInsightsResourceGroupName": "rg",
        "containerRegistryOption": "none",
    }.items():
        params[key] = {"value": value}
    planned = expand(
        template,
        params,
        subscription_id="sub",
        resource_group="rg",
        location="westeurope",
        tenant_id="t",
        reference=lambda rid: {},
    )
    assert [p.type for p in planned] == ["Microsoft.MachineLearningServices/workspaces"]
    ws = planned[0]
    assert ws.id == "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/mlw-a"
    assert ws.body["properties"]["storageAccount"].endswith("/Microsoft.Storage/storageAccounts/st1")
    assert ws.body["properties"]["containerRegistry"] is None
