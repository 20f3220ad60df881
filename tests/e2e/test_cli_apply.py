"""`tessera apply -f`: the README's juicer examples round-trip through a running suite.

Apply creates them; applying again changes nothing (no new version); an edit
to one definition is one update, shown as a diff, and `--dry-run` shows it
without writing.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from cli_runner import Tessera, examples_copy, use_suite

from tessera.decision.v1 import decision_pb2
from tessera.experiments.v1 import experiments_pb2
from tessera.segments.v1 import segments_pb2
from tessera.suite import Suite

Clients = Any  # conftest.Clients: the generated stubs of the running suite

pytestmark = pytest.mark.e2e

SEGMENTS = ("juicer-fans", "juicer-shoppers", "washing-machine-buyers")
CAMPAIGNS = ("juicer-promo", "washing-machine-care", "christmas-juicers")


@pytest.fixture
def tessera_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, suite: Suite
) -> Tessera:
    use_suite(monkeypatch, suite)
    return Tessera(capsys)


def versions(tessera: Clients, suffix: str) -> dict[str, int]:
    """The stored version of every example definition, by `kind/key` without the suffix."""
    found = {}
    for key in SEGMENTS:
        request = segments_pb2.GetSegmentRequest(key=f"{key}-{suffix}")
        found[f"segment/{key}"] = tessera.segments.GetSegment(request).segment.version
    request = experiments_pb2.GetExperimentRequest(key=f"juicer-page-layout-{suffix}")
    found["experiment/juicer-page-layout"] = tessera.experiments.GetExperiment(
        request
    ).experiment.version
    for key in CAMPAIGNS:
        request = decision_pb2.GetCampaignRequest(key=f"{key}-{suffix}")
        found[f"campaign/{key}"] = tessera.decision.GetCampaign(request).campaign.version
    return found


def test_apply__examples_twice__second_run_changes_nothing(
    tessera_cli: Tessera, tessera: Clients, tmp_path: Path
):
    folder, suffix = examples_copy(tmp_path)

    first = tessera_cli("apply", "-f", str(folder))
    second = tessera_cli("apply", "-f", str(folder))

    assert first.code == 0, first.err
    # Other tests' campaigns share home_hero in this suite: the roadmap check
    # may name them too, so collisions are checked apart.
    lines = first.out.splitlines()
    collisions = [line for line in lines if line.startswith("  collides with ")]
    care = lines.index(f"campaign/washing-machine-care-{suffix} created (version 1)")
    under_care = itertools.takewhile(lambda line: line in collisions, lines[care + 1 :])
    assert any(
        line.startswith(f"  collides with juicer-promo-{suffix}: juicer-promo-{suffix} shares ")
        and line.endswith(
            f"both are in conflict group home-hero: juicer-promo-{suffix} is shown, "
            f"washing-machine-care-{suffix} not"
        )
        for line in under_care
    ), first.out
    assert [line for line in lines if line not in collisions] == [
        f"segment/juicer-fans-{suffix} created (version 1)",
        f"segment/juicer-shoppers-{suffix} created (version 1)",
        f"segment/washing-machine-buyers-{suffix} created (version 1)",
        f"experiment/juicer-page-layout-{suffix} created (version 1)",
        f"campaign/juicer-promo-{suffix} created (version 1)",
        f"campaign/washing-machine-care-{suffix} created (version 1)",
        f"campaign/christmas-juicers-{suffix} created (version 1)",
        "7 created, 0 configured, 0 unchanged",
    ]
    assert second.code == 0, second.err
    assert second.out.splitlines()[-1] == "0 created, 0 configured, 7 unchanged"
    assert all(line.endswith(" unchanged") for line in second.out.splitlines()[:-1])
    assert set(versions(tessera, suffix).values()) == {1}
    # What apply wrote is what the services hold: the campaign with its control.
    promo = tessera.decision.GetCampaign(
        decision_pb2.GetCampaignRequest(key=f"juicer-promo-{suffix}")
    ).campaign
    assert [(v.key, v.weight) for v in promo.variants] == [("juicer-banner", 9), ("control", 1)]
    assert list(promo.audience_segment_keys) == [f"juicer-fans-{suffix}"]


def test_apply__one_definition_edited__dry_run_shows_the_diff_then_one_update(
    tessera_cli: Tessera, tessera: Clients, tmp_path: Path
):
    folder, suffix = examples_copy(tmp_path)
    assert tessera_cli("apply", "-f", str(folder)).code == 0
    campaigns = folder / "campaigns.yaml"
    campaigns.write_text(campaigns.read_text().replace("weight: 9", "weight: 8", 1))

    dry = tessera_cli("apply", "-f", str(folder), "--dry-run")
    held = versions(tessera, suffix)
    applied = tessera_cli("apply", "-f", str(folder))

    assert dry.code == 0, dry.err
    name = f"campaign/juicer-promo-{suffix}"
    assert f"{name} configured (dry run)" in dry.out.splitlines()
    assert f"--- {name} (stored, version 1)" in dry.out
    assert f"+++ {name} ({campaigns})" in dry.out
    changed = [
        line for line in dry.out.splitlines() if line[:1] in "+-" and line[:3] not in "+++---"
    ]
    assert changed == ["-  weight: 9", "+  weight: 8"]
    assert (
        dry.out.splitlines()[-1] == "dry run: 0 created, 1 configured, 6 unchanged; nothing written"
    )
    assert set(held.values()) == {1}  # the dry run wrote nothing
    assert applied.code == 0, applied.err
    assert f"{name} configured (version 2)" in applied.out.splitlines()
    assert applied.out.splitlines()[-1] == "0 created, 1 configured, 6 unchanged"
    after = versions(tessera, suffix)
    assert after.pop("campaign/juicer-promo") == 2
    assert set(after.values()) == {1}
    promo = tessera.decision.GetCampaign(
        decision_pb2.GetCampaignRequest(key=f"juicer-promo-{suffix}")
    ).campaign
    assert promo.variants[0].weight == 8
    assert tessera_cli("apply", "-f", str(folder)).out.splitlines()[-1] == (
        "0 created, 0 configured, 7 unchanged"
    )


def test_apply__misspelt_field__file_line_and_field_named_and_nothing_written(
    tessera_cli: Tessera, tessera: Clients, tmp_path: Path
):
    folder, suffix = examples_copy(tmp_path)
    campaigns = folder / "campaigns.yaml"
    campaigns.write_text(campaigns.read_text().replace("weight: 9", "wieght: 9", 1))

    run = tessera_cli("apply", "-f", str(folder))

    assert run.code == 1
    assert run.err == (
        f"{campaigns}:15: campaign/juicer-promo-{suffix}: variants[0].wieght: "
        "CampaignVariant has no field 'wieght'; did you mean weight?\n"
    )
    listed = tessera.segments.ListSegments(segments_pb2.ListSegmentsRequest(page_size=1000))
    assert not [s.key for s in listed.segments if s.key.endswith(suffix)]


def test_apply__service_refuses__status_and_message_on_one_line_with_the_file_line(
    tessera_cli: Tessera, tmp_path: Path
):
    path = tmp_path / "orphan.yaml"
    path.write_text(
        "kind: Campaign\nkey: orphan\nname: Orphan\nplacements: [home_hero]\n"
        "goal: {event_type: purchase, kind: GOAL_KIND_CONVERSION}\n"
        "variants: [{key: a, weight: 1}]\n"
        "audience_segment_keys: [no-such-segment]\n"
    )

    run = tessera_cli("apply", "-f", str(path))

    assert run.code == 1
    assert run.err == (
        f"{path}:7: campaign/orphan: INVALID_ARGUMENT: "
        "campaign.audience_segment_keys[0]: no segment 'no-such-segment'\n"
    )


def test_apply__printed_by_get__applies_unchanged(
    tessera_cli: Tessera, tessera: Clients, tmp_path: Path
):
    folder, suffix = examples_copy(tmp_path)
    assert tessera_cli("apply", "-f", str(folder)).code == 0
    documents = []
    for command, keys in (("segments", SEGMENTS), ("campaigns", CAMPAIGNS)):
        for key in keys:
            shown = tessera_cli(command, "get", f"{key}-{suffix}", "-o", "yaml")
            assert shown.code == 0, shown.err
            assert "\nversion: 1\n" in shown.out
            documents.append(shown.out)
    printed = tmp_path / "printed.yaml"
    printed.write_text("---\n".join(documents))

    run = tessera_cli("apply", "-f", str(printed), "--dry-run")

    assert run.code == 0, run.err
    assert (
        run.out.splitlines()[-1] == "dry run: 0 created, 0 configured, 6 unchanged; nothing written"
    )


def test_apply__bad_payload_placeholder__dry_run_names_file_line_and_path(
    tessera_cli: Tessera, tmp_path: Path
):
    (tmp_path / "personal.yaml").write_text(
        "kind: Campaign\n"
        "key: personal\n"
        "name: Personal\n"
        "goal: {event_type: purchase, kind: GOAL_KIND_CONVERSION}\n"
        "placements: [home_hero]\n"
        "variants:\n"
        "  - key: treatment\n"
        "    weight: 1\n"
        "    payload:\n"
        "      title: 'Ideas for {{traits.first_name | default: you}}'\n"
    )

    run = tessera_cli("apply", "-f", str(tmp_path), "--dry-run")

    assert run.code == 1
    assert run.err.strip() == (
        f"{tmp_path / 'personal.yaml'}:10: campaign/personal: INVALID_ARGUMENT: "
        "campaign.variants[0].payload.title: placeholder at character 11: the default must be "
        'a JSON string ("gifts"), a number, true, false or null'
    )
