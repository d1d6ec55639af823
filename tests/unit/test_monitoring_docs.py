"""The operators' queries agree with what the service emits, and the workbook holds the documented ones."""

from __future__ import annotations

import json
import re

from models.events import EventName, StatusEvent
from tests.conftest import ROOT

DOC = (ROOT / "docs" / "monitoring.md").read_text()
WORKBOOK = json.loads((ROOT / "infra" / "monitoring-workbook.json").read_text())
QUERIES = re.findall(r"```kusto\n(.*?)```", DOC, re.S)
LOG_DIMENSIONS = {"dead_letter_queue", "dead_letter_kind", "dead_letter_reason", "request_id"}


def test_the_workbook_holds_every_documented_query_but_the_single_request_one() -> None:
    assert WORKBOOK["version"] == "Notebook/1.0"
    in_workbook = [i["content"]["query"] for i in WORKBOOK["items"] if i["type"] == 3]
    documented = [q.rstrip("\n") for q in QUERIES if "let id =" not in q]
    assert in_workbook == documented and len(documented) >= 6
    for item in WORKBOOK["items"]:
        if item["type"] == 3:
            assert item["content"]["resourceType"] == "microsoft.insights/components"


def test_queries_use_only_event_names_and_dimensions_the_service_emits() -> None:
    names = {e.value for e in EventName}
    dimensions = ({"detail"} | set(StatusEvent.model_fields)) - {"message", "name", "time"}
    for query in QUERIES:
        for quoted in re.findall(r'"(Workspace[A-Za-z]+)"', query):
            assert quoted in names, quoted
        for used in re.findall(r"customDimensions\.(\w+)", query):
            assert used in dimensions | LOG_DIMENSIONS, used
