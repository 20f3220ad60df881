"""Definition files: read, checked field by field, ordered, compared as the services store them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tessera import manifests
from tessera.decision.v1 import decision_pb2
from tessera.manifests import ManifestError
from tessera.segments.v1 import segments_pb2

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "juicer"

CAMPAIGN = """\
kind: Campaign
key: spring-sale
name: Spring sale
goal:
  event_type: purchase
  kind: GOAL_KIND_CONVERSION
placements: [home_hero]
variants:
  - key: banner
    weight: 3
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(*paths: Path) -> str:
    with pytest.raises(ManifestError) as raised:
        manifests.load(paths)
    return str(raised.value)


def test_load__juicer_examples__every_kind_read_in_file_order():
    definitions = manifests.load([EXAMPLES])

    assert [d.name for d in definitions] == [
        "campaign/juicer-promo",
        "campaign/washing-machine-care",
        "campaign/christmas-juicers",
        "experiment/juicer-page-layout",
        "segment/juicer-fans",
        "segment/juicer-shoppers",
        "segment/washing-machine-buyers",
    ]
    promo = definitions[0].message
    assert isinstance(promo, decision_pb2.Campaign)
    assert promo.status == decision_pb2.CAMPAIGN_STATUS_RUNNING
    assert [(v.key, v.weight) for v in promo.variants] == [("juicer-banner", 9), ("control", 1)]
    assert dict(promo.variants[0].payload)["title"] == "Fresh juice, 20% off"
    assert definitions[0].source.endswith("campaigns.yaml:4")


def test_apply_order__segment_refers_to_a_later_one__referenced_first_then_kinds_in_order(
    tmp_path: Path,
):
    write(
        tmp_path,
        "all.yaml",
        CAMPAIGN
        + "---\nkind: Segment\nkey: b\nname: B\nrule: {text: 'segment(\"a\")'}\n"
        + "---\nkind: Segment\nkey: a\nname: A\nrule: {text: 'true'}\n",
    )

    ordered = manifests.apply_order(manifests.load([tmp_path]))

    assert [d.name for d in ordered] == ["segment/a", "segment/b", "campaign/spring-sale"]


def test_apply_order__segments_refer_to_each_other__cycle_named(tmp_path: Path):
    path = write(
        tmp_path,
        "loop.yaml",
        "kind: Segment\nkey: a\nname: A\nrule: {text: 'segment(\"b\")'}\n---\n"
        "kind: Segment\nkey: b\nname: B\nrule: {text: 'segment(\"a\")'}\n",
    )

    with pytest.raises(ManifestError, match=r"loop.yaml:1: segment/a is in a cycle"):
        manifests.apply_order(manifests.load([path]))


def test_load__misspelt_field__file_line_path_and_the_likely_name(tmp_path: Path):
    path = write(tmp_path, "c.yaml", CAMPAIGN.replace("weight: 3", "wieght: 3"))

    assert load_error(path) == (
        f"{path}:10: campaign/spring-sale: variants[0].wieght: "
        "CampaignVariant has no field 'wieght'; did you mean weight?"
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            "status: RUNNING",
            ":11: campaign/spring-sale: status: 'RUNNING' is not a CampaignStatus: use one of "
            "CAMPAIGN_STATUS_DRAFT, CAMPAIGN_STATUS_RUNNING,",
        ),
        (
            "priority: high",
            ":11: campaign/spring-sale: priority: must be a whole number, not 'high'",
        ),
        ("priority: 2.5", "priority: must be a whole number, not 2.5"),
        (
            "audience_segment_keys: [404]",
            "audience_segment_keys[0]: must be text, not 404: put it in quotes",
        ),
        ("channels: CHANNEL_WEB", "channels: must be a list, not 'CHANNEL_WEB'"),
        (
            "schedule: {start_time: tomorrow}",
            "schedule.start_time: Failed to parse timestamp: missing valid timezone offset: "
            "write an RFC 3339 time, e.g. 2026-12-01T00:00:00Z",
        ),
        ("frequency_cap: 3", "frequency_cap: must be a mapping of FrequencyCap fields, not 3"),
    ],
)
def test_load__mistyped_field__says_what_the_field_takes(tmp_path: Path, change: str, expected):
    path = write(tmp_path, "c.yaml", CAMPAIGN + change + "\n")

    assert expected in load_error(path)


def test_load__timestamp_unquoted__read_as_rfc3339_text_not_a_yaml_date(tmp_path: Path):
    path = write(tmp_path, "c.yaml", CAMPAIGN + "schedule: {start_time: 2026-12-01T08:00:00Z}\n")

    (definition,) = manifests.load([path])

    assert definition.message.schedule.start_time.ToJsonString() == "2026-12-01T08:00:00Z"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key: a\n", "x.yaml:1: kind is missing: use one of Segment, Experiment, Campaign"),
        ("kind: Segmnt\nkey: a\n", "x.yaml:1: kind 'Segmnt' is not known"),
        ("- kind: Segment\n", "x.yaml:1: a definition is a mapping with a kind, not a list"),
        ("kind: Segment\nname: A\n", "x.yaml:1: segment: key: is required"),
        ("kind: Segment\nkey: a\nname: A\nname: B\n", "x.yaml:4: name is written twice"),
        ("kind: Segment\nkey: [a\n", "x.yaml:3:1: expected ',' or ']'"),
    ],
)
def test_load__not_a_definition__names_file_and_line(tmp_path: Path, text: str, expected: str):
    path = write(tmp_path, "x.yaml", text)

    error = load_error(path)

    assert error.startswith(f"{tmp_path}/{expected}")


def test_load__same_key_in_two_files__both_named(tmp_path: Path):
    first = write(tmp_path, "a.yaml", CAMPAIGN)
    write(tmp_path, "b.yaml", CAMPAIGN)

    assert load_error(tmp_path) == (
        f"{tmp_path}/b.yaml:1: campaign/spring-sale is defined twice (first in {first}:1)"
    )


def test_load__no_such_path__named(tmp_path: Path):
    assert load_error(tmp_path / "nope") == f"{tmp_path / 'nope'}: no such file or directory"


def test_load__fields_the_service_sets__ignored_so_get_output_applies(tmp_path: Path):
    stored = decision_pb2.Campaign()
    stored.CopyFrom(manifests.load([write(tmp_path, "c.yaml", CAMPAIGN)])[0].message)
    stored.version = 7
    stored.experiment_key = "campaign-spring-sale"
    stored.created_at.FromJsonString("2026-01-01T00:00:00Z")
    kind = manifests.kinds()["Campaign"]
    printed = manifests.to_yaml([manifests.to_document(kind, stored)])

    (again,) = manifests.load([write(tmp_path, "printed.yaml", printed)])

    assert "version: 7\n" in printed  # a number, not proto JSON's "7"
    assert again.message.version == 0  # type: ignore[attr-defined]
    assert again.message.experiment_key == ""  # type: ignore[attr-defined]
    assert again.message.variants[0].weight == 3  # type: ignore[attr-defined]


def test_as_stored__campaign__control_and_experiment_key_added_as_the_decision_service_does(
    tmp_path: Path,
):
    (definition,) = manifests.load([write(tmp_path, "c.yaml", CAMPAIGN)])

    stored = manifests.as_stored(definition.kind, definition.message)

    assert [(v.key, v.weight) for v in stored.variants] == [("banner", 3), ("control", 3)]  # type: ignore[attr-defined]
    assert stored.experiment_key == "campaign-spring-sale"  # type: ignore[attr-defined]
    assert stored.status == decision_pb2.CAMPAIGN_STATUS_DRAFT  # type: ignore[attr-defined]
    assert manifests.as_stored(definition.kind, stored) == stored  # what is stored is unchanged


def test_diff__one_field_changed__only_that_line_differs():
    kind = manifests.kinds()["Segment"]
    before = segments_pb2.Segment(key="a", name="A", rule=segments_pb2.Rule(text="true"), version=4)
    after = segments_pb2.Segment(key="a", name="A", rule=segments_pb2.Rule(text="false"))

    lines = manifests.diff(kind, before, after, "stored", "a.yaml")

    assert lines[:2] == ["--- stored", "+++ a.yaml"]
    assert [line for line in lines[2:] if line[:1] in "+-"] == [
        "-  text: 'true'",
        "+  text: 'false'",
    ]


def test_diff__payload_keys_in_another_order__only_the_changed_weight_differs():
    kind = manifests.kinds()["Campaign"]
    stored = decision_pb2.Campaign(key="a")
    stored.variants.add(key="v", weight=9).payload.update({"title": "T", "image": "/i.jpg"})
    desired = decision_pb2.Campaign(key="a")
    desired.variants.add(key="v", weight=8).payload.update({"image": "/i.jpg", "title": "T"})

    lines = manifests.diff(kind, stored, desired, "stored", "a.yaml")

    assert [line for line in lines[2:] if line[:1] in "+-"] == ["-  weight: 9", "+  weight: 8"]


def test_docs__every_yaml_example__loads_and_normalises(tmp_path: Path):
    docs = EXAMPLES.parents[1] / "docs" / "definitions-as-code.md"
    blocks = re.findall(r"```yaml\n(.*?)```", docs.read_text(), flags=re.S)
    for index, block in enumerate(blocks):
        write(tmp_path, f"{index}.yaml", block)

    definitions = manifests.load([tmp_path])

    assert [d.kind.name for d in definitions] == ["Segment", "Experiment", "Campaign"]
    for definition in definitions:
        manifests.as_stored(definition.kind, definition.message)  # as the service checks it
