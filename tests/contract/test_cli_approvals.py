"""The CLI's approval commands against the served API (local sign-in, the fake cloud, real step workers).

A prod workspace with a GPU meets the shipped policy's `prod-gpu` rule: it waits in
`awaiting_approval` for an approver of its team (fiona) or the platform's (victor, wendy). Each
command is run as a user would run it (`python -m cli --as USER ...` through `main`, over HTTP) and
checked against what the service then holds; refusals come from the service's authorisation.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cli.commands import main
from composition import Container
from handlers.api import create_api
from models.records import RequestRecord, RequestStatus
from models.settings import Settings
from tests.conftest import ROOT, example, poll, running_steps, served
from tests.fakes import FakeCloud
from tests.tokens import LateApp

# The profile's cpu-cluster (4 x Standard_DS3_v2 at 0.229/h) and the gpu (1 x Standard_NC6s_v3 at 3.06/h), 730 h.
MONTH = "USD 2,902/month at most (0 idle), prices of 2026-12-01"


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


@pytest.fixture
def bed(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bed]:
    monkeypatch.setenv("VENDING_DATA_DIR", str(tmp_path / "cli-data"))
    cloud = FakeCloud()
    late = LateApp()
    with served(late) as url:
        # The embedded issuer names its token endpoint by the service's own address: the served port.
        container = Container(settings.model_copy(update={"port": int(url.rsplit(":", 1)[1])}), cloud=cloud, sinks=[])
        container.swap(preflight=None)
        late.app = create_api(lambda: container, local_issuer=container.local_issuer)
        with running_steps(container):
            yield Bed(container, cloud, url, tmp_path)


def cli(bed: Bed, user: str, *args: str) -> Ran:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["--url", bed.url, "--as", user, *args], out=out, stdin=io.StringIO())
    return Ran(code, out.getvalue(), err.getvalue())


def prod_gpu(bed: Bed, name: str) -> str:
    body: dict[str, Any] = example("cpu-small.json") | {
        "team": "fraud-detection",
        "environment": "prod",
        "workspace_name": name,
    }
    body["compute"] = [{"name": "gpu", "vm_size": "Standard_NC6s_v3", "min_nodes": 0, "max_nodes": 1}]
    path = bed.tmp / f"{name}.json"
    path.write_text(json.dumps(body))
    return str(path)


def waiting(bed: Bed, name: str, user: str = "alice") -> str:
    ran = cli(bed, user, "submit", prod_gpu(bed, name))
    assert ran.code == 0, ran.out + ran.err
    assert "it waits for approval" in ran.out
    rid = ran.out.split("accepted: ", 1)[1].split(" ", 1)[0]
    assert bed.record(rid).status == RequestStatus.AWAITING_APPROVAL
    return rid


def test_plan_says_what_it_would_cost_and_which_rules_it_would_wait_for(bed: Bed) -> None:
    ran = cli(bed, "alice", "plan", prod_gpu(bed, "mlw-fraud-plan"))
    assert ran.code == 0, ran.err
    assert f"estimate: {MONTH}" in ran.out
    assert "  gpu                  Standard_NC6s_v3           dedicated    USD 2,234 max, 0 idle" in ran.out
    assert "approval: it would wait in awaiting_approval" in ran.out and "  rule prod-gpu: 1 approval" in ran.out
    assert bed.container.store.list_requests(limit=10).items == []  # a plan makes nothing
    cheap = cli(bed, "alice", "plan", str(ROOT / "examples" / "cpu-small.json"))
    assert cheap.code == 0, cheap.err
    assert "approval: none needed" in cheap.out


def test_an_approver_sees_what_waits_for_them_and_the_requester_sees_nothing(bed: Bed) -> None:
    rid = waiting(bed, "mlw-fraud-gpu")

    listed = cli(bed, "fiona", "approvals")

    assert listed.code == 0, listed.err
    head, rules, estimate = listed.out.splitlines()[:3]
    assert head.startswith(f"{rid}  fraud-detection  prod  mlw-fraud-gpu  asked by Alice Fraser  due 20")
    assert rules == "  create: rules prod-gpu; still needed: prod-gpu 1 more"
    assert estimate == f"  estimate: {MONTH}"
    as_json = json.loads(cli(bed, "fiona", "approvals", "--json").out)
    assert [i["id"] for i in as_json["items"]] == [rid]
    assert as_json["items"][0]["approval"]["still_needed"] == {"prod-gpu": 1}
    mine = cli(bed, "alice", "approvals")
    assert (mine.code, mine.out) == (0, "nothing waits for your decision\n")
    assert json.loads(cli(bed, "alice", "approvals", "--json").out) == {"items": []}
    # The requester's status says why it waits, what it would cost, and who must decide.
    status = cli(bed, "alice", "status", rid)
    assert status.code == 0, status.err
    assert f"  estimate: {MONTH}" in status.out
    assert "  approval (create, round 1): pending, due " in status.out
    assert "    rule prod-gpu: 1 approval from the team's or the platform's approvers" in status.out
    assert "    still needed: prod-gpu 1 more" in status.out
    # Following a request that waits for a person ends at once, saying so.
    followed = cli(bed, "alice", "status", rid, "--wait")
    assert followed.code == 0 and f"{rid}: awaiting_approval" in followed.out


def test_refusals_name_their_rule_and_change_nothing(bed: Bed) -> None:
    rid = waiting(bed, "mlw-fraud-gpu")

    alice = cli(bed, "alice", "approve", rid)  # her own request, and she holds no approve role

    assert alice.code == 1
    assert "(HTTP 403)" in alice.err and "rule: MissingRole" in alice.err
    own = waiting(bed, "mlw-fiona-gpu", user="fiona")  # fiona approves for the team, but asked for this one
    fiona = cli(bed, "fiona", "approve", own, "--reason", "mine")
    assert fiona.code == 1
    assert "(HTTP 403)" in fiona.err and "rule: OwnRequest" in fiona.err
    assert "nobody approves their own request" in fiona.err
    bob = cli(bed, "bob", "deny", rid, "--reason", "no")
    assert bob.code == 1 and "(HTTP 404)" in bob.err
    with pytest.raises(SystemExit) as unsaid, contextlib.redirect_stderr(io.StringIO()) as err:
        main(["--url", bed.url, "--as", "victor", "deny", rid], out=io.StringIO())
    assert unsaid.value.code == 2
    assert "the following arguments are required: --reason" in err.getvalue()
    blank = cli(bed, "victor", "deny", rid, "--reason", " ")
    assert blank.code == 1 and "(HTTP 422)" in blank.err and "  - reason: " in blank.err
    for request_id in (rid, own):
        record = bed.record(request_id)
        assert record.status == RequestStatus.AWAITING_APPROVAL
        assert record.approval is not None and record.approval.decisions == []
    assert not bed.cloud.calls


def test_an_approval_runs_the_request_and_status_shows_who_approved(bed: Bed) -> None:
    rid = waiting(bed, "mlw-fraud-gpu")

    approved = cli(bed, "fiona", "approve", rid, "--reason", "budgeted for Q1")

    assert approved.code == 0, approved.err
    assert f"{rid}: approved; it runs now" in approved.out
    poll(lambda: bed.record(rid).status == RequestStatus.SUCCEEDED, what="the approved request to succeed")
    assert bed.cloud.calls
    status = cli(bed, "alice", "status", rid)
    assert status.code == 0, status.err
    assert f"{rid}: succeeded" in status.out
    assert "  approval (create, round 1): approved at " in status.out
    assert "by Fiona Lead " in status.out and "(rest): budgeted for Q1" in status.out
    assert "still needed" not in status.out
    again = cli(bed, "fiona", "approve", rid)
    assert again.code == 0 and "nothing new was recorded" in again.out
    late = cli(bed, "victor", "deny", rid, "--reason", "too late")
    assert late.code == 1 and "(HTTP 409)" in late.err and "code: ApprovalSettled" in late.err
    assert bed.record(rid).status == RequestStatus.SUCCEEDED


def test_a_denial_ends_the_request_and_status_shows_the_reason(bed: Bed) -> None:
    approved = waiting(bed, "mlw-fraud-gpu")
    assert cli(bed, "fiona", "approve", approved).code == 0
    rid = waiting(bed, "mlw-fraud-gpu2")

    denied = cli(bed, "victor", "deny", rid, "--reason", "no GPU budget this quarter")

    assert denied.code == 0, denied.err
    assert f"{rid}: denied; nothing was made" in denied.out
    record = bed.record(rid)
    assert record.status == RequestStatus.DENIED
    assert record.approval is not None and record.approval.denial is not None
    assert record.approval.denial.reason == "no GPU budget this quarter"
    status = cli(bed, "alice", "status", rid)
    assert status.code == 0, status.err
    assert f"{rid}: denied" in status.out
    assert "  approval (create, round 1): denied at " in status.out
    assert "  deny    by Victor Approver " in status.out and ": no GPU budget this quarter" in status.out
    assert cli(bed, "fiona", "approvals").out == "nothing waits for your decision\n"
    listed = cli(bed, "alice", "list", "--status", "denied")
    assert listed.code == 0 and rid in listed.out and approved not in listed.out


def test_a_change_that_adds_a_gpu_waits_and_its_denial_keeps_the_workspace(bed: Bed) -> None:
    body = example("cpu-small.json") | {"team": "fraud-detection", "environment": "prod", "workspace_name": "mlw-cpu"}
    path = bed.tmp / "cpu.json"
    path.write_text(json.dumps(body))
    made = cli(bed, "alice", "submit", str(path), "--wait")
    assert made.code == 0, made.out + made.err
    rid = made.out.split("accepted: ", 1)[1].split(" ", 1)[0]

    asked = cli(
        bed,
        "alice",
        "update",
        rid,
        "--set",
        "compute[1].name=gpu",
        "--set",
        "compute[1].vm_size=Standard_NC6s_v3",
        "--set",
        "compute[1].max_nodes=1",
    )

    assert asked.code == 0, asked.out + asked.err
    assert f"{rid}: the change waits for approval; revision 1 stays as it is" in asked.out
    listed = cli(bed, "fiona", "approvals")
    assert listed.out.startswith(f"{rid}  fraud-detection  prod  mlw-cpu  asked by Alice Fraser")
    assert "  update: rules prod-gpu; still needed: prod-gpu 1 more" in listed.out
    assert "  the change: " in listed.out
    denied = cli(bed, "fiona", "deny", rid, "--reason", "not now")
    assert denied.code == 0, denied.err
    assert f"{rid}: the change is denied and dropped; the workspace stays as it was (succeeded)" in denied.out
    record = bed.record(rid)
    assert (record.status, record.revision) == (RequestStatus.SUCCEEDED, 1)
    assert [c["name"] for c in record.request.model_dump(mode="json")["compute"]] == ["cpu-cluster"]
    status = cli(bed, "alice", "status", rid)
    assert "  approval (update, round 1): denied at " in status.out and ": not now" in status.out
    assert "    the change: 2 to create" in status.out
