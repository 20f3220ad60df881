"""`days_since(...)` and `starts_with`: their meaning, both notations, and their errors.

Dates are read in UTC days (tessera.segments.domain.dates); the day numbers
are those of event windows, so "today" is the evaluation's UTC day. That the
vectorised evaluation agrees with this one for every value is the property
test of tests/unit/segments/test_estimate_one_answer.py.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tessera.segments.domain import (
    Compare,
    DaysSince,
    EventHistoryView,
    Literal,
    Subject,
    TraitRef,
    compile_rule,
    parse_json_logic,
    parse_text,
    utc_day,
    validate,
)
from tessera.segments.domain.dates import date_day

TODAY = utc_day(dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC))


def subject(**traits: object) -> Subject:
    return Subject(traits=traits, history=EventHistoryView(today=TODAY))


def days_since(value: object) -> object:
    rule = compile_rule(parse_text("days_since(trait.d) == null"))
    if rule(subject(d=value)):
        return None
    for days in range(-3, 400):
        if compile_rule(parse_text(f"days_since(trait.d) == {days}"))(subject(d=value)):
            return days
    raise AssertionError("days_since out of the range tried")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-06-15", 0),  # today
        ("2025-06-14", 1),
        ("2025-05-16", 30),
        ("2024-06-15", 365),
        ("2025-06-16", -1),  # a date to come counts down
        ("2025-06-15T00:00:00Z", 0),
        ("2025-06-14T23:59:59.999Z", 1),
        ("2025-06-15T01:30:00+02:00", 1),  # 23:30 UTC the day before
        ("2025-06-14T23:30:00-02:00", 0),  # 01:30 UTC today
        ("2025-06-14T22:00", 1),  # no offset: UTC
        ("2025-06-15 08:00", 0),  # a space for the T
    ],
)
def test_days_since__iso_dates__whole_utc_days_to_today(value: str, expected: int) -> None:
    assert days_since(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "yesterday",
        "2024-02-30",  # no such day
        "2025-13-01",
        "0000-01-01",
        "2025-06-15T24:00",
        "2025-06-15T10:00+25:00",
        "15/06/2025",
        "20250615",
        1718409600,  # numbers are not dates: seconds or milliseconds?
        True,
        ["2025-06-15"],
        {"date": "2025-06-15"},
        "2025-06-15" + " " * 40,
    ],
)
def test_days_since__not_a_date__null_so_no_number_comparison_matches(value: object) -> None:
    assert days_since(value) is None
    for text in ("days_since(trait.d) <= 30", "days_since(trait.d) > 30", "days_since(trait.d)"):
        assert not compile_rule(parse_text(text))(subject(d=value)), text


def test_days_since__missing_trait__null() -> None:
    assert compile_rule(parse_text("days_since(trait.d) == null"))(subject())
    assert not compile_rule(parse_text("days_since(trait.d) <= 30"))(subject())


def test_days_since__signed_up_less_than_30_days_ago__the_brief_rule() -> None:
    rule = compile_rule(parse_text("days_since(trait.signup_date) <= 30"))

    assert rule(subject(signup_date="2025-05-16"))
    assert not rule(subject(signup_date="2025-05-15"))


def test_date_day__known_day_numbers() -> None:
    # 1970-01-01 is day 0 and 2000-03-01 day 11017 (days since the Unix epoch).
    assert date_day("1970-01-01") == 0
    assert date_day("2000-03-01") == 11_017
    assert date_day("1969-12-31T23:00:00-02:00") == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('trait.zip starts_with "75"', True),
        ('trait.zip starts_with "751"', False),
        ('trait.zip starts_with ""', True),
        ('trait.title starts_with "head"', False),  # case matters
        ('trait.title starts_with "Head of"', True),
        ('trait.number starts_with "7"', False),  # a number is no string
        ('trait.missing starts_with "7"', False),
        ('not (trait.missing starts_with "7")', True),
        ("trait.title starts_with trait.prefix", True),
        ("trait.zip starts_with trait.prefix", False),
    ],
)
def test_starts_with__strings_only__case_sensitive(text: str, expected: bool) -> None:
    person = subject(zip="75011", title="Head of Sales", number=75011, prefix="Head")

    assert compile_rule(parse_text(text))(person) is expected


def test_json_logic__days_since_and_starts_with__same_tree_as_text() -> None:
    text = 'days_since(trait.signup_date) <= 30 and trait.zip starts_with "75"'
    json_logic = (
        '{"and": [{"<=": [{"days_since": {"var": "trait.signup_date"}}, 30]},'
        ' {"starts_with": [{"var": "trait.zip"}, "75"]}]}'
    )

    assert parse_json_logic(json_logic) == parse_text(text)
    assert parse_json_logic('{"days_since": {"var": "context.visit.date"}}') == parse_text(
        "days_since(context.visit.date)"
    )
    assert parse_text('trait.zip starts_with "75"') == Compare(
        "starts_with", TraitRef(("zip",)), Literal("75")
    )
    assert parse_text("days_since(trait.a.b) > 0") == Compare(
        ">", DaysSince(TraitRef(("a", "b"))), Literal(0)
    )


@pytest.mark.parametrize(
    ("rule", "line", "column", "message"),
    [
        ('days_since("2024-01-01") > 1', 1, 12, "takes a trait or context attribute"),
        ("days_since(channel) > 1", 1, 12, "reads a date in a trait or context field"),
        ("days_since(session.page_views) > 1", 1, 12, "not session.page_views"),
        ("days_since(trait) > 1", 1, 12, "'trait' needs a name"),
        ("days_since(trait.a, 3) > 1", 1, 19, "expected ')'"),
        ('days_since(trait.a) == "soon"', 1, 21, "compares a number"),
        ('days_since(trait.a) starts_with "1"', 1, 21, "days_since(trait.a) is a number"),
        ("days_since > 1", 1, 1, "days_since is a function"),
        ("trait.a starts_with 3", 1, 9, "but 3 is a number"),
        ('session.page_views starts_with "1"', 1, 20, "session.page_views is a number"),
        ('{"days_since": "trait.a"}', 1, 2, "takes one trait or context attribute"),
        ('{"days_since": {"var": "channel"}}', 1, 24, "not channel"),
        ('{"days_since": {"segment": "a"}}', 1, 17, "takes one trait or context attribute"),
        ('{"starts_with": [{"var": "trait.a"}, 1]}', 1, 2, "but 1 is a number"),
        ('{"starts_with": [{"var": "trait.a"}]}', 1, 2, "takes 2 arguments"),
    ],
)
def test_validate__days_since_and_starts_with_mistakes__positioned_errors(
    rule: str, line: int, column: int, message: str
) -> None:
    errors = validate(rule)

    assert errors, rule
    assert (errors[0].line, errors[0].column) == (line, column), errors
    assert message in errors[0].message, errors
