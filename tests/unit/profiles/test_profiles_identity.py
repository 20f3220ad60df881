"""Identity resolution rules: limits per identity type, priority between types."""

from __future__ import annotations

import pytest

from tessera.profiles.domain.identity import DEFAULT_RULES, IdentityRules, plan
from tessera.profiles.domain.model import IdentityKey


def key(kind: str, value: str) -> IdentityKey:
    return IdentityKey(kind, value)


USER_1, USER_2 = key("user_id", "u1"), key("user_id", "u2")
TABLET = key("device", "tablet")


def test_plan__new_identities__one_new_profile_takes_them_all():
    result = plan(DEFAULT_RULES, [key("cookie", "c"), USER_1], {}, {})

    assert result.profiles == ()
    assert set(result.attach) == {key("cookie", "c"), USER_1}
    assert result.refused == ()


def test_plan__device_of_one_person_seen_with_another_user_id__device_refused_no_merge():
    owners = {TABLET: "p1"}
    held = {"p1": [TABLET, USER_1]}

    result = plan(DEFAULT_RULES, [TABLET, USER_2], owners, held)

    assert result.profiles == ()
    assert result.attach == (USER_2,)
    (refusal,) = result.refused
    assert refusal.identity == TABLET and refusal.profile_id == "p1"
    assert "2 user_id identities" in refusal.reason and "limit is 1" in refusal.reason


def test_plan__cookie_listed_before_user_id__user_id_wins_cookie_refused():
    cookie = key("cookie", "c1")
    owners = {cookie: "p1", USER_2: "p2"}
    held = {"p1": [cookie, USER_1], "p2": [USER_2]}

    result = plan(DEFAULT_RULES, [cookie, USER_2], owners, held)

    assert result.profiles == ("p2",)
    assert [r.identity for r in result.refused] == [cookie]


def test_plan__same_conflict_without_priority__request_order_decides():
    cookie = key("cookie", "c1")
    owners = {cookie: "p1", USER_2: "p2"}
    held = {"p1": [cookie, USER_1], "p2": [USER_2]}
    no_priority = IdentityRules(limits={"user_id": 1}, priority=())

    result = plan(no_priority, [cookie, USER_2], owners, held)

    assert result.profiles == ("p1",)
    assert [r.identity for r in result.refused] == [USER_2]


def test_plan__anonymous_profile_logs_in__merges():
    cookie = key("cookie", "c1")
    owners = {cookie: "anonymous", USER_1: "known"}
    held = {"anonymous": [cookie], "known": [USER_1, key("cookie", "c0")]}

    result = plan(DEFAULT_RULES, [cookie, USER_1], owners, held)

    assert result.profiles == ("known", "anonymous")
    assert result.refused == ()


def test_plan__profile_at_cookie_limit__new_cookie_refused_with_limit():
    cookies = [key("cookie", f"c{i}") for i in range(20)]
    owners = {USER_1: "p1"}
    held = {"p1": [USER_1, *cookies]}

    result = plan(DEFAULT_RULES, [USER_1, key("cookie", "c20")], owners, held)

    assert result.profiles == ("p1",) and result.attach == ()
    (refusal,) = result.refused
    assert refusal.identity == key("cookie", "c20") and refusal.profile_id == ""
    assert refusal.reason == "the profile holds 20 cookie identities already; the limit is 20"
    assert not result.changes


def test_plan__merge_past_cookie_limit__refused_although_user_ids_agree():
    rules = IdentityRules(limits={"user_id": 1, "cookie": 3})
    owners = {USER_1: "p1", key("cookie", "x"): "p2"}
    held = {
        "p1": [USER_1, key("cookie", "a"), key("cookie", "b")],
        "p2": [key("cookie", "x"), key("cookie", "y")],
    }

    result = plan(rules, [USER_1, key("cookie", "x")], owners, held)

    assert result.profiles == ("p1",)
    assert "4 cookie identities" in result.refused[0].reason


def test_plan__profile_stored_past_a_lowered_limit__still_merges_what_adds_none():
    rules = IdentityRules(limits={"cookie": 2})
    old = [key("cookie", str(i)) for i in range(5)]
    owners = {old[0]: "p1", key("device", "d"): "p2"}
    held = {"p1": old, "p2": [key("device", "d")]}

    result = plan(rules, [old[0], key("device", "d")], owners, held)

    assert set(result.profiles) == {"p1", "p2"} and result.refused == ()


def test_plan__two_new_user_ids__second_refused():
    result = plan(DEFAULT_RULES, [USER_1, USER_2], {}, {})

    assert result.attach == (USER_1,)
    assert [r.identity for r in result.refused] == [USER_2]


def test_plan__unknown_type__no_limit_and_lowest_priority():
    loyalty = key("loyalty_card", "l1")
    owners = {loyalty: "p1", key("cookie", "c"): "p2"}
    held = {"p1": [loyalty, USER_1], "p2": [key("cookie", "c"), USER_2]}

    result = plan(DEFAULT_RULES, [loyalty, key("cookie", "c")], owners, held)

    assert result.profiles == ("p2",)  # the cookie outranks a type the priority does not name
    assert [r.identity for r in result.refused] == [loyalty]


def test_identity_rules__limit_below_one__refused():
    with pytest.raises(ValueError, match="at least 1"):
        IdentityRules(limits={"cookie": 0})
