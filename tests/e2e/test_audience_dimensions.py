"""One rule per dimension of customer value, pinned against live profiles.

The rules are read from the table in docs/rules.md ("A rule for every
dimension of customer value"), so the page cannot drift from what is tested.
For every dimension, people who should and should not match are made through
the generated clients (Identify with their identities, UpdateTraits, Track
with timestamps and channels); then every person's EvaluateSegments and every
segment's EstimateSize must place exactly the people meant.

The suite is shared with other tests, so EstimateSize sizes
`segment("<key>") and trait.run == "<this run>"`: the dimension's own rule,
over this test's people only.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from scenario import segment

from tessera.common.v1 import common_pb2
from tessera.profiles.v1 import profiles_pb2
from tessera.segments.v1 import segments_pb2

RULES_PAGE = Path(__file__).parents[2] / "docs" / "rules.md"
DAYS = dt.timedelta(days=1)
TODAY = dt.datetime.now(dt.UTC).date()
WEB, APP, CALL_CENTER = (
    common_pb2.CHANNEL_WEB,
    common_pb2.CHANNEL_APP,
    common_pb2.CHANNEL_CALL_CENTER,
)


def documented_rules() -> dict[str, str]:
    """Dimension -> rule, from the table between the `dimensions` markers of docs/rules.md."""
    page = RULES_PAGE.read_text()
    table = page.split("<!-- dimensions:", 1)[1].split("<!-- /dimensions -->", 1)[0]
    rows = re.findall(r"^\| ([^|]+?) \| `([^`]+)` \|$", table, flags=re.MULTILINE)
    return dict(rows)


@dataclass
class Person:
    """Someone made for one dimension's test, and the dimensions they belong to."""

    name: str
    traits: dict[str, Any] = field(default_factory=dict)
    identities: tuple[str, ...] = ()
    events: tuple[tuple[str, float, int, dict[str, Any]], ...] = ()
    """(type, days ago, channel, properties)"""
    member_of: tuple[str, ...] = ()


def days_ago(days: int) -> str:
    return (TODAY - dt.timedelta(days=days)).isoformat()


PEOPLE = [
    # products purchased
    Person(
        "bought a juicer 10 days ago",
        events=(("purchase", 10, WEB, {"category": "juicers", "revenue": 89.0}),),
        member_of=("products purchased",),
    ),
    Person(
        "bought a juicer 120 days ago and a blender this week",
        events=(
            ("purchase", 120, WEB, {"category": "juicers", "revenue": 89.0}),
            ("purchase", 3, WEB, {"category": "blenders", "revenue": 49.0}),
        ),
    ),
    # product usage
    Person(
        "used the juicer-pro 5 times this month",
        events=tuple(("product_used", d, APP, {"product_id": "juicer-pro"}) for d in range(5)),
        member_of=("product usage",),
    ),
    Person(
        "used the juicer-pro twice, another product often",
        events=(
            *(("product_used", d, APP, {"product_id": "juicer-pro"}) for d in range(2)),
            *(("product_used", d, APP, {"product_id": "blender-x"}) for d in range(6)),
        ),
    ),
    # location
    Person(
        "lives in Paris",
        traits={"country": "FR", "postal_code": "75011"},
        member_of=("location",),
    ),
    Person("lives in Lyon", traits={"country": "FR", "postal_code": "69001"}),
    Person("postal code 75 in Belgium", traits={"country": "BE", "postal_code": "7500"}),
    Person("postal code as a number", traits={"country": "FR", "postal_code": 75011}),
    # demographics
    Person(
        "28, household of 4",
        traits={"age": 28, "household_size": 4},
        member_of=("demographics",),
    ),
    Person("35, household of 4", traits={"age": 35, "household_size": 4}),
    Person("28, living alone", traits={"age": 28, "household_size": 1}),
    Person("age written as text", traits={"age": "28", "household_size": 4}),
    # device and app usage
    Person(
        "app installed, opened 3 times this week",
        identities=("app_install",),
        events=tuple(("app_open", d, APP, {}) for d in (0, 2, 6)),
        member_of=("device and app usage",),
    ),
    Person(
        "app installed, opened once this week",
        identities=("app_install",),
        events=(("app_open", 1, APP, {}), ("app_open", 9, APP, {}), ("app_open", 12, APP, {})),
    ),
    Person(
        "no app install, opens on the web",
        events=tuple(("app_open", d, WEB, {}) for d in range(4)),
    ),
    # sector, company type, job title
    Person(
        "marketing director at a large retailer",
        traits={
            "company": {"sector": "retail", "employees": 1200},
            "job_title": "Marketing Director",
        },
        member_of=("sector, company type, job title",),
    ),
    Person(
        "director at a small retailer",
        traits={"company": {"sector": "retail", "employees": 12}, "job_title": "Director"},
    ),
    Person(
        "director at a bank",
        traits={"company": {"sector": "finance", "employees": 5000}, "job_title": "Director"},
    ),
    Person(
        "analyst at a hotel group",
        traits={"company": {"sector": "hospitality", "employees": 300}, "job_title": "Analyst"},
    ),
    # acquisition channel
    Person(
        "came from paid search",
        traits={"acquisition_channel": "paid_search"},
        member_of=("acquisition channel",),
    ),
    Person(
        "came from an affiliate",
        traits={"acquisition_channel": "affiliate"},
        member_of=("acquisition channel",),
    ),
    Person("came organically", traits={"acquisition_channel": "organic"}),
    # time since sign-up
    Person(
        "signed up 10 days ago",
        traits={"signup_date": days_ago(10)},
        member_of=("time since sign-up",),
    ),
    Person(
        "signed up 30 days ago, late in the evening west of UTC",
        # 20:00 at UTC-03:00 is 23:00 UTC: still the day 30 days back.
        traits={"signup_date": f"{days_ago(30)}T20:00:00-03:00"},
        member_of=("time since sign-up",),
    ),
    Person("signed up 45 days ago", traits={"signup_date": days_ago(45)}),
    Person("sign-up date not a date", traits={"signup_date": "last spring"}),
    # CRM interactions
    Person(
        "known to the CRM, called last month",
        identities=("crm_id",),
        events=(("crm_call", 20, CALL_CENTER, {}),),
        member_of=("CRM interactions",),
    ),
    Person(
        "known to the CRM, called half a year ago",
        identities=("crm_id",),
        events=(("crm_call", 180, CALL_CENTER, {}),),
    ),
    Person(
        "known to the CRM, call logged from the web",
        identities=("crm_id",),
        events=(("crm_call", 5, WEB, {}),),
    ),
    Person("not in the CRM, called", events=(("crm_call", 5, CALL_CENTER, {}),)),
]


@dataclass
class Run:
    """This run's people (name -> profile id) and segments (dimension -> key)."""

    marker: str
    profiles: dict[str, str]
    keys: dict[str, str]


def _make(tessera: Any, person: Person, marker: str) -> str:
    identities = [common_pb2.Identity(type="cookie", value=uuid.uuid4().hex)]
    identities += [common_pb2.Identity(type=t, value=uuid.uuid4().hex) for t in person.identities]
    profile_id: str = tessera.profiles.Identify(
        profiles_pb2.IdentifyRequest(identities=identities)
    ).profile.profile_id
    request = profiles_pb2.UpdateTraitsRequest(profile_id=profile_id)
    request.traits.update({**person.traits, "run": marker})
    tessera.profiles.UpdateTraits(request)
    now = dt.datetime.now(dt.UTC)
    for kind, ago, channel, properties in person.events:
        event = common_pb2.Event(
            event_id=uuid.uuid4().hex, profile_id=profile_id, type=kind, channel=channel
        )
        event.timestamp.FromDatetime(now - ago * DAYS)
        event.properties.update(properties)
        tessera.profiles.Track(profiles_pb2.TrackRequest(event=event))
    return profile_id


def _size(tessera: Any, rule: str) -> segments_pb2.EstimateSizeResponse:
    reply: segments_pb2.EstimateSizeResponse = tessera.segments.EstimateSize(
        segments_pb2.EstimateSizeRequest(rule=segments_pb2.Rule(text=rule)), timeout=10
    )
    return reply


@pytest.fixture(scope="module")
def run(tessera: Any) -> Run:
    rules = documented_rules()
    marker = uuid.uuid4().hex
    keys = {dimension: f"dim-{i}-{marker[:8]}" for i, dimension in enumerate(rules)}
    for dimension, rule in rules.items():
        segment(tessera, keys[dimension], rule)
    profiles = {person.name: _make(tessera, person, marker) for person in PEOPLE}
    # Written last: once the projection holds it, it holds every write above.
    done = _make(tessera, Person("sentinel", traits={"done": marker}), marker)
    profiles["sentinel"] = done
    deadline = time.monotonic() + 60
    while _size(tessera, f'trait.done == "{marker}"').members != 1:
        assert time.monotonic() < deadline, "the projection did not reach this test's writes"
        time.sleep(0.2)
    return Run(marker, profiles, keys)


def test_rules_page__every_dimension_of_the_brief__has_a_rule_and_people_to_test_it() -> None:
    rules = documented_rules()

    assert list(rules) == [
        "products purchased",
        "product usage",
        "location",
        "demographics",
        "device and app usage",
        "sector, company type, job title",
        "acquisition channel",
        "time since sign-up",
        "CRM interactions",
    ]
    for dimension in rules:
        assert any(dimension in p.member_of for p in PEOPLE), dimension


def test_evaluate_segments__each_person__in_exactly_the_dimensions_meant(
    tessera: Any, run: Run
) -> None:
    ours = {key: dimension for dimension, key in run.keys.items()}
    placed: dict[str, set[str]] = {}
    for person in PEOPLE:
        reply = tessera.segments.EvaluateSegments(
            segments_pb2.EvaluateSegmentsRequest(profile_id=run.profiles[person.name])
        )
        placed[person.name] = {ours[k] for k in reply.segment_keys if k in ours}

    assert placed == {person.name: set(person.member_of) for person in PEOPLE}


@pytest.mark.parametrize("dimension", list(documented_rules()))
def test_estimate_size__each_dimension__counts_the_people_meant(
    tessera: Any, run: Run, dimension: str
) -> None:
    expected = sum(dimension in person.member_of for person in PEOPLE)

    sized = _size(tessera, f'segment("{run.keys[dimension]}") and trait.run == "{run.marker}"')
    everyone = _size(tessera, f'trait.run == "{run.marker}"')

    assert sized.members == expected
    assert everyone.members == len(PEOPLE) + 1  # and the sentinel
