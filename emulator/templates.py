"""ARM template evaluation: enough of the template language to deploy what azure-ai-ml sends.

Expressions are parsed into a small tree and evaluated lazily, so `if`, `and` and `or` only
evaluate the branch they take (a `reference()` in an untaken branch is never looked up).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class TemplateError(Exception):
    """The template cannot be evaluated; the message says where."""


# ----- parsing ---------------------------------------------------------------------------------

TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[(),.\[\]]))"
)


@dataclass
class Call:
    name: str
    args: list[Any]


@dataclass
class Access:
    target: Any
    key: Any  # an expression node or a literal property name


@dataclass
class Literal:
    value: Any


def _tokens(text: str) -> list[tuple[str, str]]:
    pos, out = 0, []
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = TOKEN.match(text, pos)
        if not m:
            raise TemplateError(f"cannot parse expression at {text[pos : pos + 30]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise TemplateError(f"expected {value or 'more'} in expression")
        self.i += 1
        return tok

    def expr(self) -> Any:
        kind, value = self.take()
        if kind == "str":
            node: Any = Literal(value[1:-1].replace("''", "'"))
        elif kind == "num":
            node = Literal(float(value) if "." in value else int(value))
        elif kind == "name":
            self.take("(")
            args = []
            if self.peek() and self.peek()[1] != ")":  # type: ignore[index]
                args.append(self.expr())
                while self.peek() and self.peek()[1] == ",":  # type: ignore[index]
                    self.take(",")
                    args.append(self.expr())
            self.take(")")
            node = Call(value.lower(), args)
        else:
            raise TemplateError(f"unexpected {value!r} in expression")
        while self.peek() and self.peek()[1] in (".", "["):  # type: ignore[index]
            if self.take()[1] == ".":
                node = Access(node, Literal(self.take()[1]))
            else:
                key = self.expr()
                self.take("]")
                node = Access(node, key)
        return node


def parse(text: str) -> Any:
    """Parse the inside of a `[...]` expression."""
    p = _Parser(text)
    node = p.expr()
    if p.peek() is not None:
        raise TemplateError(f"unexpected trailing text in expression {text!r}")
    return node


# ----- evaluation ------------------------------------------------------------------------------


def unique_string(*parts: str) -> str:
    """Return a deterministic 13-character lowercase string, like ARM's uniqueString()."""
    digest = hashlib.sha256("-".join(parts).encode()).digest()
    return base64.b32encode(digest).decode().lower()[:13]


@dataclass
class Scope:
    """What an expression can see: the deployment's subscription, group, parameters and variables."""

    subscription_id: str
    resource_group: str
    location: str
    tenant_id: str
    parameters: dict[str, Any]
    variables: dict[str, Any] = field(default_factory=dict)
    raw_variables: dict[str, Any] = field(default_factory=dict)
    reference: Callable[[str], dict[str, Any]] = lambda rid: {}

    def resource_id(self, args: list[Any]) -> str:
        # resourceId([subscriptionId], [resourceGroupName], resourceType, name1, name2, ...)
        sub, rg = self.subscription_id, self.resource_group
        types = [i for i, a in enumerate(args) if isinstance(a, str) and "/" in a and "." in a.split("/")[0]]
        if not types:
            raise TemplateError(f"resourceId() needs a resource type, got {args}")
        t = types[0]
        before = args[:t]
        if len(before) == 2:
            sub, rg = before
        elif len(before) == 1:
            rg = before[0]
        rtype, names = args[t], [str(n) for n in args[t + 1 :]]
        namespace, *type_parts = rtype.split("/")
        segs = "/".join(f"{tp}/{n}" for tp, n in zip(type_parts, names, strict=False))
        return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{namespace}/{segs}"


def _truthy(v: Any) -> bool:
    return bool(v) and v != "false"


def _empty(v: Any) -> bool:
    return v is None or v in ("", [], {})


def evaluate(node: Any, scope: Scope) -> Any:
    """Evaluate a parsed expression."""
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Access):
        target = evaluate(node.target, scope)
        key = evaluate(node.key, scope)
        if isinstance(target, dict):
            for k, v in target.items():
                if k.lower() == str(key).lower():
                    return v
            raise TemplateError(f"property '{key}' not found")
        if isinstance(target, list):
            return target[int(key)]
        raise TemplateError(f"cannot read '{key}' of {type(target).__name__}")
    assert isinstance(node, Call)
    name, args = node.name, node.args
    # Lazy ones first.
    if name == "if":
        return evaluate(args[1] if _truthy(evaluate(args[0], scope)) else args[2], scope)
    if name == "and":
        return all(_truthy(evaluate(a, scope)) for a in args)
    if name == "or":
        return any(_truthy(evaluate(a, scope)) for a in args)
    vals = [evaluate(a, scope) for a in args]
    fn = _FUNCTIONS.get(name)
    if fn is None:
        raise TemplateError(f"the emulator does not support the template function {name}()")
    return fn(scope, vals)


def _variable(scope: Scope, name: str) -> Any:
    if name not in scope.variables:
        if name not in scope.raw_variables:
            raise TemplateError(f"variable '{name}' is not defined")
        scope.variables[name] = resolve(scope.raw_variables[name], scope)
    return scope.variables[name]


def _parameter(scope: Scope, name: str) -> Any:
    if name not in scope.parameters:
        raise TemplateError(f"parameter '{name}' is not defined")
    return scope.parameters[name]


def _concat(_: Scope, v: list[Any]) -> Any:
    if v and isinstance(v[0], list):
        return [x for part in v for x in part]
    return "".join("" if x is None else (json.dumps(x) if isinstance(x, (dict, list)) else str(x)) for x in v)


def _subscription_resource_id(scope: Scope, v: list[Any]) -> str:
    # subscriptionResourceId([subscriptionId], resourceType, name1, ...)
    sub, rest = (v[0], v[1:]) if len(v) % 2 == 0 else (scope.subscription_id, v)
    rtype, names = rest[0], rest[1:]
    namespace, *types = rtype.split("/")
    segs = "/".join(f"{t}/{n}" for t, n in zip(types, names, strict=False))
    return f"/subscriptions/{sub}/providers/{namespace}/{segs}"


_FUNCTIONS: dict[str, Callable[[Scope, list[Any]], Any]] = {
    "parameters": lambda s, v: _parameter(s, v[0]),
    "variables": lambda s, v: _variable(s, v[0]),
    "concat": _concat,
    "equals": lambda s, v: v[0] == v[1],
    "not": lambda s, v: not _truthy(v[0]),
    "empty": lambda s, v: _empty(v[0]),
    "json": lambda s, v: json.loads(v[0]),
    "array": lambda s, v: v[0] if isinstance(v[0], list) else [v[0]],
    "tolower": lambda s, v: str(v[0]).lower(),
    "toupper": lambda s, v: str(v[0]).upper(),
    "string": lambda s, v: v[0] if isinstance(v[0], str) else json.dumps(v[0]),
    "bool": lambda s, v: _truthy(v[0]),
    "int": lambda s, v: int(v[0]),
    "length": lambda s, v: len(v[0]),
    "contains": lambda s, v: v[1] in v[0],
    "coalesce": lambda s, v: next((x for x in v if x is not None), None),
    "true": lambda s, v: True,
    "false": lambda s, v: False,
    "null": lambda s, v: None,
    "union": lambda s, v: (
        {k: x for d in v for k, x in d.items()}
        if isinstance(v[0], dict)
        else list(dict.fromkeys(x for a in v for x in a))
    ),
    "createobject": lambda s, v: dict(zip(v[::2], v[1::2], strict=False)),
    "replace": lambda s, v: str(v[0]).replace(v[1], v[2]),
    "split": lambda s, v: str(v[0]).split(v[1]),
    "last": lambda s, v: v[0][-1],
    "first": lambda s, v: v[0][0],
    "format": lambda s, v: re.sub(r"\{(\d+)\}", lambda m: str(v[int(m.group(1)) + 1]), v[0]),
    "guid": lambda s, v: str(uuid.uuid5(uuid.NAMESPACE_URL, "-".join(map(str, v)))),
    "newguid": lambda s, v: str(uuid.uuid4()),
    "uniquestring": lambda s, v: unique_string(*map(str, v)),
    "resourceid": lambda s, v: s.resource_id(v),
    "subscriptionresourceid": _subscription_resource_id,
    "subscription": lambda s, v: {
        "id": f"/subscriptions/{s.subscription_id}",
        "subscriptionId": s.subscription_id,
        "tenantId": s.tenant_id,
        "displayName": "Emulated subscription",
    },
    "resourcegroup": lambda s, v: {
        "id": f"/subscriptions/{s.subscription_id}/resourceGroups/{s.resource_group}",
        "name": s.resource_group,
        "location": s.location,
        "properties": {"provisioningState": "Succeeded"},
    },
    "reference": lambda s, v: s.reference(v[0]),
}


def resolve(value: Any, scope: Scope) -> Any:
    """Evaluate every `[...]` expression inside a JSON value."""
    if isinstance(value, str):
        if value.startswith("[["):
            return value[1:]
        if value.startswith("[") and value.endswith("]"):
            return evaluate(parse(value[1:-1]), scope)
        return value
    if isinstance(value, list):
        return [resolve(v, scope) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, scope) for k, v in value.items()}
    return value


@dataclass
class PlannedResource:
    """One resource a deployment creates."""

    id: str
    type: str
    api_version: str
    body: dict[str, Any]


def expand(
    template: dict[str, Any],
    parameters: dict[str, Any],
    *,
    subscription_id: str,
    resource_group: str,
    location: str,
    tenant_id: str,
    reference: Callable[[str], dict[str, Any]],
) -> list[PlannedResource]:
    """Return the resources a template deploys with these parameters, in template order."""
    scope = Scope(
        subscription_id=subscription_id,
        resource_group=resource_group,
        location=location,
        tenant_id=tenant_id,
        parameters={},
        reference=reference,
    )
    scope.raw_variables = template.get("variables", {}) or {}
    for name, spec in (template.get("parameters") or {}).items():
        if name in parameters:
            given = parameters[name]
            scope.parameters[name] = given.get("value") if isinstance(given, dict) and "value" in given else given
        elif "defaultValue" in spec:
            scope.parameters[name] = resolve(spec["defaultValue"], scope)
        else:
            raise TemplateError(f"the template parameter '{name}' has no value and no default")
    out: list[PlannedResource] = []
    _expand_resources(template.get("resources") or [], scope, out, parent=None)
    return out


def _expand_resources(
    resources: list[dict[str, Any]], scope: Scope, out: list[PlannedResource], parent: PlannedResource | None
) -> None:
    for res in resources:
        if "condition" in res and not _truthy(resolve(res["condition"], scope)):
            continue
        rtype = resolve(res["type"], scope)
        name = resolve(res["name"], scope)
        if parent is not None and "/" not in rtype:
            rtype = f"{parent.type}/{rtype}"
            rid = f"{parent.id}/{rtype.split('/')[-1]}/{name}"
        else:
            namespace, *type_parts = rtype.split("/")
            names = str(name).split("/")
            segs = "/".join(f"{t}/{n}" for t, n in zip(type_parts, names, strict=False))
            rid = f"/subscriptions/{scope.subscription_id}/resourceGroups/{scope.resource_group}/providers/{namespace}/{segs}"
        if rtype.lower() == "microsoft.resources/deployments":
            inner = (res.get("properties") or {}).get("template")
            if inner:
                nested = expand(
                    inner,
                    resolve((res.get("properties") or {}).get("parameters") or {}, scope),
                    subscription_id=scope.subscription_id,
                    resource_group=resolve(res.get("resourceGroup", scope.resource_group), scope),
                    location=scope.location,
                    tenant_id=scope.tenant_id,
                    reference=scope.reference,
                )
                out.extend(nested)
            continue
        body = {
            k: resolve(v, scope)
            for k, v in res.items()
            if k in ("location", "tags", "properties", "sku", "kind", "identity", "zones", "plan")
        }
        planned = PlannedResource(id=rid, type=rtype, api_version=str(res.get("apiVersion", "")), body=body)
        out.append(planned)
        if res.get("resources"):
            _expand_resources(res["resources"], scope, out, parent=planned)
