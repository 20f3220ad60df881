"""Numbers from events: whatever accepted events and merges do, a profile still converts.

A profile is poisoned when a number derived from its events no longer fits
its proto field (int64 counters, finite doubles): every later GetProfile,
Identify and Decide of that person would fail. These tests drive the domain
with extreme but accepted numbers and check the proto conversion.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.errors import InvalidArgument
from tessera.profiles.domain.features import compute_features
from tessera.profiles.domain.history import History, add_to_history, merge_histories
from tessera.profiles.domain.model import INT64_MAX, EventData, validate_event
from tessera.profiles.domain.profile import Profile
from tessera.profiles.domain.session import (
    CartItem,
    Session,
    apply_event,
    current,
    merge_sessions,
)
from tessera.profiles.transport.convert import profile_message

NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
EXACT = 2**53
"""The edge guard refuses larger magnitudes; anything up to it is accepted."""
EARLIEST = dt.datetime(1, 1, 1, tzinfo=dt.UTC)

_ids = itertools.count()

counters = st.integers(0, INT64_MAX)
amounts = st.floats(0, float(EXACT)) | st.integers(0, EXACT)
numbers = amounts | st.integers(-EXACT, -1) | st.floats(-float(EXACT), float(EXACT))
stamps = st.sampled_from(
    [
        NOW,
        NOW - dt.timedelta(minutes=10),
        NOW + dt.timedelta(minutes=4),
        NOW - dt.timedelta(days=400),
        EARLIEST,
        EARLIEST + dt.timedelta(minutes=5),
    ]
)


@st.composite
def sessions(draw: st.DrawFn) -> Session | None:
    """A stored session with counters anywhere an int64 allows (many events behind it)."""
    if draw(st.booleans()):
        return None
    products = st.dictionaries(st.sampled_from(["p1", "p2"]), counters, max_size=2)
    return Session(
        started_at=NOW - dt.timedelta(minutes=20),
        last_seen_at=NOW - dt.timedelta(minutes=1),
        page_views=draw(counters),
        product_views=draw(products),
        category_views=draw(st.dictionaries(st.sampled_from(["c1", "c2"]), counters, max_size=2)),
        cart=tuple(
            CartItem(p, "c1", q, float(draw(amounts)), NOW - dt.timedelta(minutes=2))
            for p, q in draw(st.dictionaries(st.sampled_from(["p1", "p2"]), counters)).items()
        ),
        time_spent_ms=draw(counters),
        events=draw(counters),
    )


@st.composite
def histories(draw: st.DrawFn) -> History:
    """A stored history with aggregates anywhere their fields allow."""
    return History(
        orders=draw(counters),
        revenue=draw(st.floats(0, 1.7e308)),
        last_purchase_at=draw(st.none() | stamps),
        categories=draw(st.dictionaries(st.sampled_from(["c1", "c2"]), counters, max_size=2)),
        category_purchased_at=draw(st.dictionaries(st.sampled_from(["c1", "c2"]), stamps)),
    )


@st.composite
def events(draw: st.DrawFn) -> EventData | None:
    """An event as a client may send it; None when the domain refuses it."""
    kind = draw(st.sampled_from(["page_view", "product_view", "add_to_cart", "purchase", "custom"]))
    properties: dict[str, Any] = {"product_id": draw(st.sampled_from(["p1", "p2"]))}
    properties["category"] = draw(st.sampled_from(["c1", "c2"]))
    for name in ("duration_ms", "quantity", "price", "revenue"):
        if draw(st.booleans()):
            properties[name] = draw(numbers)
    try:
        return validate_event(
            event_id=f"e{next(_ids)}",
            event_type=kind,
            profile_id="p",
            identities=[],
            timestamp=draw(stamps),
            channel=1,
            properties=properties,
            now=NOW,
        )
    except InvalidArgument:
        return None


def _finite_doubles(message: Any) -> list[float]:
    features = message.features
    found = [
        features.rfm.recency_days,
        features.rfm.monetary,
        features.lifetime_value,
        features.conversion_probability,
    ]
    found += [i.score for i in features.interests]
    found += [item.price for item in message.session.cart]
    return [value for value in found if not math.isfinite(value)]


def _read(session: Session | None, history: History) -> Any:
    """What GetProfile does with a stored session and history."""
    live = current(session, NOW)
    profile = Profile(
        profile_id="p",
        identities=(),
        traits={},
        session=live,
        features=compute_features(live, history, NOW),
        created_at=NOW,
        updated_at=NOW,
    )
    return profile_message(profile)


steps = st.lists(st.tuples(st.integers(0, 2), events()) | st.tuples(st.integers(0, 2)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(sessions(), histories()), min_size=3, max_size=3),
    steps,
)
def test_profile__any_accepted_events_and_merges__converts_to_proto(
    people: list[tuple[Session | None, History]],
    plan: list[tuple[Any, ...]],
) -> None:
    state = list(people)
    for entry in plan:
        target = entry[0]
        if len(entry) == 2:
            event = entry[1]
            if event is None:
                continue
            session, history = state[target]
            state[target] = (apply_event(session, event), add_to_history(history, event))
        else:
            # Merge the next person into `target`; the merged one starts afresh.
            other = (target + 1) % 3
            (s1, h1), (s2, h2) = state[target], state[other]
            state[target] = (merge_sessions(s1, s2), merge_histories(h1, h2))
            state[other] = (None, History())

    for session, history in state:
        message = _read(session, history)

        assert _finite_doubles(message) == []


def test_session__durations_summing_past_int64__time_spent_saturates() -> None:
    session: Session | None = None
    for index in range(1100):
        session = apply_event(
            session,
            EventData(f"d{index}", "page_view", NOW, properties={"duration_ms": EXACT}),
        )

    assert session is not None
    assert session.time_spent_ms == INT64_MAX
    assert _read(session, History()).session.time_spent_ms == INT64_MAX


def test_session__event_at_the_first_representable_instant__applies() -> None:
    first = EventData("a", "page_view", EARLIEST)
    second = EventData("b", "page_view", EARLIEST + dt.timedelta(seconds=1))

    session = apply_event(apply_event(None, first), second)

    assert session is not None and session.page_views == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [("quantity", 0.5), ("quantity", 0), ("quantity", -1), ("duration_ms", -5), ("price", -1.0)],
)
def test_validate_event__number_that_cannot_count__invalid_argument_names_it(
    name: str, value: float
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_event(
            event_id="e",
            event_type="add_to_cart",
            profile_id="p",
            identities=[],
            timestamp=NOW,
            channel=1,
            properties={"product_id": "p1", name: value},
            now=NOW,
        )

    assert raised.value.field == f"event.properties.{name}"
