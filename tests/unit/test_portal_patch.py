"""The edit form's change is a JSON Merge Patch that the service's own merge turns into what the user asked.

portal/static/patch.js runs here under node (which the tests already need for Azurite): for any
request as GET shows it and any request the form collects, applying the patch the page would send
(`mergePatch(compact(before), compact(after))`) with engine.lifecycle.merge_patch gives exactly
what the form said.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.lifecycle import merge_patch
from tests.conftest import ROOT

PATCH_JS = ROOT / "portal" / "static" / "patch.js"
# Reads one JSON pair a line, answers one JSON line: the compacted sides and the patch.
RUNNER = f"""
import {{ compact, mergePatch }} from {json.dumps(PATCH_JS.as_uri())};
import readline from "node:readline";
const lines = readline.createInterface({{ input: process.stdin }});
for await (const line of lines) {{
  const [before, after] = JSON.parse(line);
  const from = compact(before), to = compact(after);
  process.stdout.write(JSON.stringify({{ from, to, patch: mergePatch(from, to) }}) + "\\n");
}}
"""


class Node:
    def __init__(self) -> None:
        node = shutil.which("node")
        assert node, "node is needed (make tools installs it with Azurite)"
        self.proc = subprocess.Popen(
            [node, "--input-type=module", "-e", RUNNER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def patch(self, before: Any, after: Any) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps([before, after]) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "node stopped"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    n = Node()
    yield n
    n.close()


KEYS = st.sampled_from(["team", "compute", "tags", "name", "max_nodes", "existing", "a", "b"])
SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(["", "x", "dev", "0"])
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
OBJECTS = st.dictionaries(KEYS, JSON, max_size=5)


@given(before=OBJECTS, after=OBJECTS)
def test_applying_the_patch_gives_what_the_form_says(node: Node, before: dict[str, Any], after: dict[str, Any]) -> None:
    answer = node.patch(before, after)
    assert merge_patch(answer["from"], answer["patch"]) == answer["to"]


def test_an_unchanged_request_sends_an_empty_patch_whatever_the_key_order_or_unset_fields(node: Node) -> None:
    shown = {
        "team": "churn",
        "compute": [{"name": "cpu", "kind": "cluster", "vm_size": "Standard_DS3_v2", "assigned_user": None}],
        "existing": {"storage_account_id": None, "key_vault_id": None},
        "workspace_name": None,
        "tags": {"cost-center": "CC-1"},
    }
    collected = {
        "tags": {"cost-center": "CC-1"},
        "compute": [{"vm_size": "Standard_DS3_v2", "kind": "cluster", "name": "cpu"}],
        "team": "churn",
    }
    assert node.patch(shown, collected)["patch"] == {}


def test_a_removed_tag_and_a_changed_list_are_sent_as_the_rfc_says(node: Node) -> None:
    answer = node.patch(
        {"tags": {"cost-center": "CC-1", "project": "p"}, "compute": [{"name": "a", "max_nodes": 1}]},
        {"tags": {"cost-center": "CC-1"}, "compute": [{"name": "a", "max_nodes": 2}]},
    )
    assert answer["patch"] == {"tags": {"project": None}, "compute": [{"name": "a", "max_nodes": 2}]}
