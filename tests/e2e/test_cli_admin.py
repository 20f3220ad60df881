"""`tessera segments|experiments|campaigns`, `tessera profiles` and `tessera track` on a live suite.

JSON and YAML output parse and hold what the services hold; tables show the
keys; a failed call is its gRPC status and message on one line, exit 1.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_runner import Tessera, examples_copy, use_suite

from tessera.decision.v1 import decision_pb2
from tessera.experiments.v1 import experiments_pb2
from tessera.suite import Suite

pytestmark = pytest.mark.e2e


@pytest.fixture
def tessera_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, suite: Suite
) -> Tessera:
    use_suite(monkeypatch, suite)
    return Tessera(capsys)


@pytest.fixture
def applied(tessera_cli: Tessera, tmp_path: Path) -> str:
    """The juicer examples applied under keys of this test's own; their suffix."""
    folder, suffix = examples_copy(tmp_path)
    run = tessera_cli("apply", "-f", str(folder))
    assert run.code == 0, run.err
    return suffix


def test_list__json_and_yaml__parse_to_the_stored_definitions(tessera_cli: Tessera, applied: str):
    segments = json.loads(tessera_cli("segments", "list", "-o", "json").out)
    campaigns = list(yaml.safe_load_all(tessera_cli("campaigns", "list", "-o", "yaml").out))
    experiments = json.loads(tessera_cli("experiments", "list", "--output", "json").out)

    fans = next(s for s in segments if s["key"] == f"juicer-fans-{applied}")
    assert fans == {
        "kind": "Segment",
        "key": f"juicer-fans-{applied}",
        "name": "Juicer fans",
        "description": "Looked at juicers at least twice in this visit.",
        "rule": {"text": 'session.category_views("juicers") >= 2'},
        "version": 1,
        "created_at": fans["created_at"],
        "updated_at": fans["updated_at"],
    }
    promo = next(c for c in campaigns if c["key"] == f"juicer-promo-{applied}")
    assert promo["kind"] == "Campaign"
    assert promo["variants"][1] == {"key": "control", "weight": 1}
    assert promo["status"] == "CAMPAIGN_STATUS_RUNNING"
    keys = {e["key"] for e in experiments}
    # A campaign's own experiment is listed beside the experiments defined alone.
    assert {f"juicer-page-layout-{applied}", f"campaign-juicer-promo-{applied}"} <= keys


def test_list__table__a_row_per_definition_under_a_header(tessera_cli: Tessera, applied: str):
    run = tessera_cli("campaigns", "list")

    lines = run.out.splitlines()
    assert lines[0].split() == [
        "KEY",
        "STATUS",
        "PRIORITY",
        "PLACEMENTS",
        "AUDIENCE",
        "VARIANTS",
        "GOAL",
        "VERSION",
    ]
    promo = next(line for line in lines if line.startswith(f"juicer-promo-{applied} "))
    assert promo.split() == [
        f"juicer-promo-{applied}",
        "running",
        "10",
        "home_hero",
        f"juicer-fans-{applied}",
        "juicer-banner",
        "90%",
        "purchase",
        "(conversion)",
        "1",
    ]
    assert lines[-1].endswith(" campaigns")
    assert all(line == line.rstrip() for line in lines)


def test_get__table__every_field_with_its_value(tessera_cli: Tessera, applied: str):
    run = tessera_cli("experiments", "get", f"juicer-page-layout-{applied}")

    rows = {
        line.split()[0]: line.split(None, 1)[1] for line in run.out.splitlines() if line[:1] != " "
    }
    assert rows["status"] == "running"
    assert rows["traffic_fraction"] == "0.5"
    assert rows["goal.kind"] == "conversion"
    assert rows["variants"] == "key: list, weight: 1"
    assert 'key: grid, weight: 1, payload: {"columns": 3, "layout": "grid"}' in run.out


def test_delete__campaign__gone_and_its_experiment_stopped(
    tessera_cli: Tessera, tessera: Any, applied: str
):
    key = f"washing-machine-care-{applied}"

    deleted = tessera_cli("campaigns", "delete", key)
    again = tessera_cli("campaigns", "get", key)

    assert (deleted.code, deleted.out) == (0, f"campaign/{key} deleted\n")
    assert again.code == 1
    assert again.err == f"NOT_FOUND: key: no campaign '{key}'\n"
    experiment = tessera.experiments.GetExperiment(
        experiments_pb2.GetExperimentRequest(key=f"campaign-{key}")
    ).experiment
    assert experiment.status == experiments_pb2.EXPERIMENT_STATUS_STOPPED


def test_delete__segment_another_refers_to__refused_on_one_line(tessera_cli: Tessera, applied: str):
    run = tessera_cli("segments", "delete", f"juicer-fans-{applied}")

    assert run.code == 1
    assert run.err.count("\n") == 1
    assert run.err.startswith("FAILED_PRECONDITION: key: segments ")
    assert f"juicer-shoppers-{applied}" in run.err


def test_experiments_stop__running__stopped_and_shown(
    tessera_cli: Tessera, tessera: Any, applied: str
):
    key = f"juicer-page-layout-{applied}"

    run = tessera_cli("experiments", "stop", key, "-o", "json")

    assert run.code == 0, run.err
    shown = json.loads(run.out)
    assert (shown["status"], shown["version"]) == ("EXPERIMENT_STATUS_STOPPED", 2)
    stored = tessera.experiments.GetExperiment(experiments_pb2.GetExperimentRequest(key=key))
    assert stored.experiment.status == experiments_pb2.EXPERIMENT_STATUS_STOPPED


def test_segments_list__nothing_listening__unavailable_on_one_line(tessera_cli: Tessera):
    from tessera.suite import free_port

    address = f"127.0.0.1:{free_port()}"

    run = tessera_cli("segments", "list", "--address", address, "--timeout", "2")

    assert run.code == 1
    assert run.err.startswith("UNAVAILABLE: ")
    assert f"is the suite running at {address}?" in run.err
    assert run.err.count("\n") == 1


def test_track__same_event_id_twice__stored_once_and_said_so(tessera_cli: Tessera):
    cookie = f"cookie={uuid.uuid4().hex}"
    event = ["--identity", cookie, "--type", "product_view", "--event-id", uuid.uuid4().hex]

    first = tessera_cli("track", *event, "--property", "category=juicers", "-o", "json")
    second = tessera_cli("track", *event, "--property", "category=juicers")

    assert first.code == 0, first.err
    tracked = json.loads(first.out)
    assert tracked["duplicate"] is False
    assert second.out == (
        f"event {event[-1]} tracked on profile {tracked['profile_id']} "
        "(a duplicate: stored before, counted once)\n"
    )


def test_track__suite_not_running__error_line_says_the_event_id_to_retry_with(
    tessera_cli: Tessera,
):
    from tessera.suite import free_port

    address = f"127.0.0.1:{free_port()}"

    run = tessera_cli(
        "track", "--identity", "cookie=a", "--type", "x", "--address", address, "--event-id", "e-1"
    )

    assert run.code == 1
    assert run.err.startswith("UNAVAILABLE: ")
    assert run.err.endswith("; send it again with --event-id e-1\n")
    assert run.err.count("\n") == 1


def test_track__no_person_named__usage_error(tessera_cli: Tessera):
    run = tessera_cli("track", "--type", "page_view")

    assert run.code == 2
    assert run.err == "track: name the person with --identity TYPE=VALUE or --profile-id\n"


def test_profiles__get_export_delete__the_person_tracked_then_erased(tessera_cli: Tessera):
    cookie = f"cookie={uuid.uuid4().hex}"
    for product, price in (("j-100", "89.9"), ("j-200", "129")):
        run = tessera_cli(
            "track",
            "--identity",
            cookie,
            "--type",
            "product_view",
            "--property",
            "category=juicers",
            "--property",
            f"product_id={product}",
            "--property",
            f"price={price}",
        )
        assert run.code == 0, run.err

    got = json.loads(tessera_cli("profiles", "get", "--identity", cookie, "-o", "json").out)
    profile_id = got["profile_id"]
    table = tessera_cli("profiles", "get", profile_id).out
    exported = yaml.safe_load(tessera_cli("profiles", "export", profile_id, "-o", "yaml").out)
    export_table = tessera_cli("profiles", "export", "--identity", cookie).out
    deleted = tessera_cli("profiles", "delete", profile_id)
    gone = tessera_cli("profiles", "get", profile_id)

    assert got["session"]["category_views"] == {"juicers": 2}
    assert got["session"]["product_views"] == {"j-100": 1, "j-200": 1}
    assert "session.category_views             juicers: 2" in table
    assert f"identities                         {cookie}" in table
    assert exported["profile"]["profile_id"] == profile_id
    events = exported["events"]
    assert [e["properties"]["product_id"] for e in events] == ["j-100", "j-200"]
    assert [e["properties"]["price"] for e in events] == [89.9, 129]
    assert "2 events" in export_table.splitlines()
    assert (deleted.code, deleted.out) == (0, f"profile {profile_id} deleted: 2 events erased\n")
    assert gone.code == 1
    assert gone.err.startswith("NOT_FOUND: ")


def test_campaigns_get__yaml__a_document_apply_reads(tessera_cli: Tessera, applied: str):
    run = tessera_cli("campaigns", "get", f"christmas-juicers-{applied}", "-o", "yaml")

    shown = yaml.safe_load(run.out)
    assert shown["kind"] == "Campaign"
    assert shown["schedule"] == {
        "windows": [
            {"name": "christmas", "start_month": 12, "start_day": 1, "end_month": 12, "end_day": 24}
        ],
        "time_zone": "Europe/Paris",
    }
    assert shown["channels"] == ["CHANNEL_WEB", "CHANNEL_APP"]
    assert (
        decision_pb2.CampaignStatus.Value(shown["status"]) == decision_pb2.CAMPAIGN_STATUS_RUNNING
    )
