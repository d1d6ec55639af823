"""Request models: Azure's naming rules, every problem reported at once, with field paths."""

from __future__ import annotations

import pytest

from models.azure_names import name_problem, tag_problem
from models.errors import InvalidInputError
from models.request import TeamOnboarding, parse_request
from tests.conftest import example


def _problems(body: dict) -> dict[str, str]:
    with pytest.raises(InvalidInputError) as info:
        parse_request(body)
    return {p.field: p.message for p in info.value.problems}


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("storage_account", ["abc", "st" + "a" * 22, "a1b2c3"], ["ab", "a" * 25, "Abc", "ab-c", "ab_c"]),
        ("key_vault", ["kv-a", "a" * 24, "kv-team-dev-1a2b"], ["kv", "1kv", "kv-", "kv--a", "a" * 25, "kv_a"]),
        ("workspace", ["abc", "a" * 33, "mlw_team-dev", "1ab"], ["ab", "a" * 34, "-ab", "ab.c", "_ab"]),
        ("compute", ["cpu", "gpu-cluster-a1", "c12", "a" * 24], ["c1", "a" * 25, "1cpu", "cpu_1", "cpu.x", "cpu-1"]),
        ("container", ["abc", "raw-data", "a" * 63], ["ab", "Abc", "a--b", "-ab", "ab-", "a" * 64]),
    ],
)
def test_azure_naming_rules(kind: str, good: list[str], bad: list[str]) -> None:
    for name in good:
        assert name_problem(kind, name) is None, name
    for name in bad:
        problem = name_problem(kind, name)
        assert problem is not None, name
        assert f"'{name}'" in problem


def test_tag_limits() -> None:
    assert tag_problem("a" * 512, "v") is None
    assert "at most 512" in (tag_problem("a" * 513, "v") or "")
    assert tag_problem("k", "v" * 256) is None
    assert "at most 256" in (tag_problem("k", "v" * 257) or "")
    assert "does not allow" in (tag_problem("a/b", "v") or "")


def test_every_problem_is_reported_at_once_with_field_paths() -> None:
    problems = _problems(example("bad-request.json"))
    assert set(problems) >= {
        "team",
        "environment",
        "region",
        "compute[0].name",
        "compute[0].max_nodes",
        "compute[2].name",
        "datastores[0].name",
        "datastores[0].container",
        "tags",
    }
    assert "min_nodes (4) is larger than max_nodes (2)" in problems["compute[0].max_nodes"]
    assert "also used by compute[1]" in problems["compute[2].name"]
    assert "'staging' is not allowed" in problems["environment"]


def test_unknown_and_missing_fields_are_named() -> None:
    problems = _problems({"team": "vision", "region": "westeurope", "colour": "blue"})
    assert problems["environment"] == "This field is required."
    assert "not known" in problems["colour"]


def test_duplicates_found_when_items_are_valid() -> None:
    body = example("cpu-small.json") | {
        "datastores": [{"name": "a", "container": "abc"}, {"name": "A", "kind": "file", "container": "abd"}]
    }
    problems = _problems(body)
    assert "appears more than once" in problems["datastores"]


def test_principals_listed_once() -> None:
    owner = {"object_id": "5f0b7c1e-8a55-4a3e-9a9e-2d4b1f0c7a11"}
    problems = _problems(example("cpu-small.json") | {"owners": [owner], "members": [owner]})
    assert "more than once" in problems["(body)"]


def test_existing_resource_ids_must_be_of_the_right_type() -> None:
    kv = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1"
    problems = _problems(example("cpu-small.json") | {"existing": {"storage_account_id": kv, "key_vault_id": kv}})
    assert "is not a Microsoft.Storage/storageAccounts resource id" in problems["existing.storage_account_id"]
    assert "existing.key_vault_id" not in problems


def test_region_is_normalised() -> None:
    req = parse_request(example("cpu-small.json") | {"region": "West Europe"})
    assert req.region == "westeurope"


def test_team_onboarding_expands_per_environment_with_cost_center() -> None:
    onboarding = TeamOnboarding.model_validate(example("onboarding.json"))
    requests = onboarding.requests()
    assert [r.environment.value for r in requests] == ["dev", "test", "prod"]
    assert all(r.tags["cost-center"] == "CC-3310" for r in requests)
    assert all(r.profile == "cpu-small" and len(r.owners) == 1 for r in requests)


def test_compute_instances_belong_to_one_user() -> None:
    body = example("cpu-small.json") | {
        "compute": [
            {"name": "nb1", "kind": "instance", "vm_size": "Standard_DS3_v2"},
            {"name": "cl1", "vm_size": "Standard_DS3_v2", "assigned_user": "0c9a3f5e-2b1d-4e6f-8a7b-9c0d1e2f3a4b"},
        ]
    }
    problems = _problems(body)
    assert "set assigned_user" in problems["compute[0].assigned_user"]
    assert "only a compute instance" in problems["compute[1].assigned_user"]


def test_a_notification_is_typed_and_reads_what_earlier_versions_stored() -> None:
    from datetime import UTC, datetime

    from pydantic import ValidationError

    from models.records import Notification

    stored = {"status": "failed", "callback": "failed", "at": "2026-11-30T10:00:00+00:00", "error": "callback: 404"}
    note = Notification.model_validate(stored)
    assert note.done and note.at == datetime(2026, 11, 30, 10, tzinfo=UTC) and note.chat is None
    assert Notification.model_validate(note.model_dump(mode="json")) == note
    assert not Notification().done
    with pytest.raises(ValidationError):
        Notification.model_validate({"status": "sent"})  # not a state a notification can be in


def test_a_chat_conversation_is_typed_by_platform_and_reads_what_earlier_versions_stored() -> None:
    from pydantic import TypeAdapter, ValidationError

    from models.records import ChatConversation, SlackConversation, TeamsConversation

    conversations: TypeAdapter[SlackConversation | TeamsConversation] = TypeAdapter(ChatConversation)
    slack = conversations.validate_python(
        {"kind": "slack", "response_url": None, "channel": "C1", "user": "U1", "message_id": "t1", "at": 1.5}
    )
    teams = conversations.validate_python(
        {"kind": "teams", "conversation": "19:abc", "user": "a-b", "message_id": "m1", "at": 2.0}
    )
    assert isinstance(slack, SlackConversation) and slack.channel == "C1"
    assert isinstance(teams, TeamsConversation) and teams.conversation == "19:abc"
    assert conversations.validate_python(slack.model_dump(mode="json")) == slack
    for bad in ({"kind": "discord"}, {"kind": "teams", "channel": "C1"}, {}):
        with pytest.raises(ValidationError):
            conversations.validate_python(bad)
