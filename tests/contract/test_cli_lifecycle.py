"""The CLI's lifecycle commands against the served API (local sign-in, the fake cloud, real step workers).

Each command is run as a user would run it (`python -m cli ...` through `main`, over HTTP, with the
token `login` remembered) and checked against what the service then holds. Refusals come from the
service's one authorisation function: bob is not in alice's team, so her request does not exist for him.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cli.commands import main
from cli.patching import PatchError, merge_patch_of, parse_path
from composition import Container
from handlers.api import create_api
from models.lifecycle import DriftFinding
from models.records import RequestRecord, RequestStatus
from models.settings import Settings
from tests.conftest import ROOT, poll, running_steps, served
from tests.fakes import FakeCloud
from tests.tokens import LateApp

CPU_SMALL = str(ROOT / "examples" / "cpu-small.json")
FRAUD_DETECTION_GROUP = "3a8e5c1f-2d47-4b96-8e0a-6f1c2d3b4a51"


@dataclass
class Bed:
    container: Container
    cloud: FakeCloud
    url: str
    tmp: Path

    def record(self, rid: str) -> RequestRecord:
        found = self.container.store.get_request(rid)
        assert found is not None
        return found


@dataclass
class Ran:
    code: int
    out: str
    err: str


class Terminal(io.StringIO):
    """Someone at a terminal, answering a question with `answer`."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def bed(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bed]:
    monkeypatch.setenv("VENDING_DATA_DIR", str(tmp_path / "cli-data"))  # where the CLI remembers its login
    cloud = FakeCloud()
    late = LateApp()
    with served(late) as url:
        # The embedded issuer names its token endpoint by the service's own address: the served port.
        container = Container(settings.model_copy(update={"port": int(url.rsplit(":", 1)[1])}), cloud=cloud, sinks=[])
        container.swap(preflight=None)
        late.app = create_api(lambda: container, local_issuer=container.local_issuer)
        with running_steps(container):
            made = Bed(container, cloud, url, tmp_path)
            assert cli(made, "login", "alice").code == 0
            yield made


def cli(bed: Bed, *args: str, stdin: io.StringIO | None = None) -> Ran:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["--url", bed.url, *args], out=out, stdin=stdin or io.StringIO())
    return Ran(code, out.getvalue(), err.getvalue())


def made(bed: Bed) -> str:
    ran = cli(bed, "submit", CPU_SMALL, "--wait")
    assert ran.code == 0, ran.out + ran.err
    rid = ran.out.split("accepted: ", 1)[1].split(" ", 1)[0]
    assert bed.record(rid).status == RequestStatus.SUCCEEDED
    return rid


def write(bed: Bed, name: str, value: Any) -> str:
    path = bed.tmp / name
    path.write_text(json.dumps(value))
    return str(path)


def test_update_with_a_merge_patch_file_shows_the_change_per_resource_and_applies_it(bed: Bed) -> None:
    rid = made(bed)
    patch = write(bed, "patch.json", {"tags": {"project": "fraud"}})

    ran = cli(bed, "update", rid, patch, "--wait")

    assert ran.code == 0, ran.out + ran.err
    assert "revision 2: " in ran.out and "to update" in ran.out
    assert "~ update  storage" in ran.out and "      tags.project: (none) → fraud" in ran.out
    assert f"{rid}: succeeded" in ran.out
    after = bed.record(rid)
    assert after.revision == 2 and after.status == RequestStatus.SUCCEEDED
    assert after.request.model_dump(mode="json")["tags"] == {
        "cost-center": "CC-1042",
        "project": "fraud",
    }  # merged, not replaced


def test_update_with_set_patches_list_elements_of_the_current_request(bed: Bed) -> None:
    rid = made(bed)
    [cluster] = bed.record(rid).request.model_dump(mode="json")["compute"]
    members = write(bed, "members.json", [{"object_id": FRAUD_DETECTION_GROUP, "type": "Group"}])

    # [1] is one past the end of the list: a new compute; the first one is sent as it is.
    added = cli(
        bed,
        "update",
        rid,
        "--set",
        "compute[1].name=extra",
        "--set",
        "compute[1].vm_size=Standard_DS3_v2",
        "--set",
        "compute[1].max_nodes=2",
        "--set",
        "tags.project=churn",
        "--set",
        f"members=@{members}",
        "--wait",
    )
    assert added.code == 0, added.out + added.err
    assert "+ create  compute:extra" in added.out
    record = bed.record(rid)
    assert record.request.model_dump(mode="json")["compute"][0] == cluster
    assert (
        record.request.model_dump(mode="json")["compute"][1]["name"] == "extra"
        and record.request.model_dump(mode="json")["compute"][1]["max_nodes"] == 2
    )
    assert (
        record.request.model_dump(mode="json")["tags"]["project"] == "churn"
        and record.request.model_dump(mode="json")["tags"]["cost-center"] == "CC-1042"
    )
    assert [m["object_id"] for m in record.request.model_dump(mode="json")["members"]] == [FRAUD_DETECTION_GROUP]

    resized = cli(bed, "update", rid, "--set", "compute[1].max_nodes=4", "--wait")
    assert resized.code == 0, resized.out + resized.err
    assert "~ update  compute:extra" in resized.out and "max_nodes: 2 → 4" in resized.out
    after = bed.record(rid)
    assert after.revision == 3
    assert [c["max_nodes"] for c in after.request.model_dump(mode="json")["compute"]] == [cluster["max_nodes"], 4]


def test_update_plan_shows_the_change_and_changes_nothing(bed: Bed) -> None:
    rid = made(bed)
    before = bed.record(rid)
    calls = sum(bed.cloud.calls.values())

    ran = cli(bed, "update", rid, "--set", "compute[0].max_nodes=2", "--plan")

    assert ran.code == 0, ran.err
    assert "revision 2: " in ran.out and "~ update  compute:cpu-cluster" in ran.out and "max_nodes: 4 → 2" in ran.out
    assert "nothing was changed (--plan)" in ran.out
    assert bed.record(rid) == before
    assert sum(bed.cloud.calls.values()) == calls


def test_a_change_azure_cannot_make_prints_every_field_error_and_fails(bed: Bed) -> None:
    rid = made(bed)
    ran = cli(bed, "update", rid, "--set", "region=northeurope", "--set", "compute[0].vm_size=Standard_NC6s_v3")
    assert ran.code == 1
    assert "Azure cannot make these changes in place. (HTTP 422)" in ran.err
    assert "  - region: " in ran.err and "  - compute[0].vm_size: " in ran.err
    assert bed.record(rid).revision == 1


def test_delete_asks_first_then_tears_down_and_status_shows_the_teardown(bed: Bed) -> None:
    rid = made(bed)

    unattended = cli(bed, "delete", rid)  # no terminal to ask on, no --yes
    assert unattended.code == 1 and "--yes" in unattended.err and "Nothing was deleted" in unattended.err
    declined = cli(bed, "delete", rid, stdin=Terminal("n\n"))
    assert declined.code == 1 and "Delete mlw-fraud-detection-dev" in declined.out
    assert "nothing was deleted" in declined.out
    assert bed.record(rid).status == RequestStatus.SUCCEEDED and bed.cloud.resources

    ran = cli(bed, "delete", rid, "--yes", "--wait")

    assert ran.code == 0, ran.out + ran.err
    assert f"{rid}: deleted" in ran.out
    assert bed.record(rid).status == RequestStatus.DELETED and bed.cloud.resources == {}
    status = cli(bed, "status", rid)
    assert status.code == 0
    assert "operation: delete  run 2  revision 1" in status.out and "it is torn down" in status.out
    assert "teardown (soft-deleting): " in status.out
    names = bed.record(rid).teardown
    assert names is not None
    for held in names.soft_deleted:
        assert f"held       {held.name} ({held.kind})" in status.out
    assert "Studio:" not in status.out  # a deleted workspace has no Studio to open
    again = cli(bed, "delete", rid, "--yes")
    assert again.code == 0 and "already deleted" in again.out


def test_delete_confirmed_at_the_terminal_purges(bed: Bed) -> None:
    rid = made(bed)
    ran = cli(bed, "delete", rid, "--purge", "--wait", stdin=Terminal("yes\n"))
    assert ran.code == 0, ran.out + ran.err
    assert "names are free at once" in ran.out
    report = bed.record(rid).teardown
    assert report is not None and report.purge and report.soft_deleted == []


def test_cancel_stops_a_run_and_retry_finishes_it(bed: Bed) -> None:
    gate = threading.Event()
    bed.cloud.gates["workspace"] = gate
    submitted = cli(bed, "submit", CPU_SMALL)
    rid = submitted.out.split("accepted: ", 1)[1].split(" ", 1)[0]
    poll(
        lambda: (s := bed.container.store.get_step(rid, "workspace")) is not None and s.attempt >= 2,
        what="the workspace step to wait at its gate",
    )

    cancelled = cli(bed, "cancel", rid, "--wait")

    assert cancelled.code == 0, cancelled.out + cancelled.err
    assert "cancelling its create (run 1)" in cancelled.out and f"{rid}: cancelled" in cancelled.out
    assert bed.record(rid).status == RequestStatus.CANCELLED
    gate.set()
    retried = cli(bed, "retry", rid, "--wait")
    assert retried.code == 0, retried.out + retried.err
    assert "retrying its create (run 1" in retried.out and f"{rid}: succeeded" in retried.out
    assert bed.record(rid).status == RequestStatus.SUCCEEDED
    nothing = cli(bed, "cancel", rid)
    assert nothing.code == 1 and "(HTTP 409)" in nothing.err and "nothing is in flight" in nothing.err


def test_extend_within_policy_and_past_its_maximum(bed: Bed) -> None:
    rid = made(bed)
    ok = cli(bed, "extend", rid, "--days", "10")
    assert ok.code == 0, ok.err
    assert "expires at " in ok.out and "(in 10.0 days)" in ok.out
    expires = bed.record(rid).expires_at
    assert expires is not None

    too_far = cli(bed, "extend", rid, "--days", "120")

    assert too_far.code == 1
    assert "(HTTP 422)" in too_far.err
    assert "  - expires_at: dev workspaces may be kept at most 90 days from now" in too_far.err
    assert bed.record(rid).expires_at == expires
    zoneless = cli(bed, "extend", rid, "--until", "2030-01-01T00:00:00")
    assert zoneless.code == 1 and "no time zone" in zoneless.err
    status = cli(bed, "status", rid)
    assert f"expires: {expires:%Y-%m-%d %H:%M} UTC" in status.out


def test_drift_shows_the_last_check_and_asks_for_one(bed: Bed) -> None:
    rid = made(bed)
    assert "drift: not checked yet" in cli(bed, "drift", rid).out
    asked = cli(bed, "drift", rid, "--check")
    assert asked.code == 0 and "drift check is asked for" in asked.out
    assert "a check is asked for" in cli(bed, "drift", rid).out
    bed.cloud.changed["compute:cpu-cluster"] = DriftFinding(
        step_id="compute:cpu-cluster",
        kind="compute-cluster",
        resource_id="/x/computes/cpu-cluster",
        drift="changed",
        field="max_nodes",
        expected="4",
        actual="8",
        message="cpu-cluster was resized by hand",
    )
    assert bed.container.lifecycle.check_drift() == 1  # the drift timer's tick

    found = cli(bed, "drift", rid)

    assert found.code == 0
    assert "1 finding" in found.out
    assert "compute:cpu-cluster: cpu-cluster was resized by hand (expected 4, found 8)" in found.out
    assert "cpu-cluster was resized by hand" in cli(bed, "status", rid).out


def test_revisions_lists_each_with_what_became_of_it(bed: Bed) -> None:
    rid = made(bed)
    assert cli(bed, "update", rid, "--set", "tags.project=x", "--wait").code == 0

    ran = cli(bed, "revisions", rid)

    assert ran.code == 0
    [first, second] = ran.out.strip().splitlines()
    assert first.strip().startswith("#1") and "applied" in first and first.endswith("created")
    assert second.strip().startswith("#2") and "applied" in second and "to update" in second
    assert "run 2" in second


def test_another_teams_member_is_told_the_request_does_not_exist(bed: Bed) -> None:
    rid = made(bed)
    before = bed.record(rid)
    for args in (
        ("update", rid, "--set", "tags.project=x"),
        ("update", rid, "--set", "tags.project=x", "--plan"),
        ("delete", rid, "--yes"),
        ("cancel", rid),
        ("retry", rid),
        ("extend", rid, "--days", "5"),
        ("drift", rid),
        ("revisions", rid),
    ):
        ran = cli(bed, "--as", "bob", *args)
        assert ran.code == 1, args
        assert "(HTTP 404)" in ran.err and f"there is no workspace request with id '{rid}'" in ran.err, args
    reader = cli(bed, "--as", "platform", "delete", rid, "--yes")  # reads every team, may change none
    assert reader.code == 1 and "(HTTP 403)" in reader.err
    assert bed.record(rid) == before


def test_set_paths_and_values() -> None:
    current = {"compute": [{"name": "a", "max_nodes": 4}, {"name": "b"}], "tags": {"cc": "1"}, "owners": []}
    assert parse_path("compute[1].max_nodes") == ["compute", 1, "max_nodes"]
    patch = merge_patch_of(
        ["compute[1].max_nodes=4", "tags.cc=1042", "tags.gone=null", "compute[0]=null"], current, load=json.loads
    )
    assert patch == {"compute": [{"name": "b", "max_nodes": 4}], "tags": {"cc": "1042", "gone": None}}
    assert current["compute"][1] == {"name": "b"}  # the request as GET showed it is not touched
    with pytest.raises(PatchError, match="not a list"):
        merge_patch_of(["tags[0]=x"], current, load=json.loads)
    with pytest.raises(PatchError, match="has 2 elements"):
        merge_patch_of(["compute[5].name=x"], current, load=json.loads)
    with pytest.raises(PatchError, match="PATH=VALUE"):
        merge_patch_of(["compute"], current, load=json.loads)
