"""datetime_to_timestamp gives what protobuf's Timestamp.FromDatetime gives."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import timestamp_pb2

from tessera.convert import datetime_to_timestamp


@pytest.mark.parametrize(
    "moment",
    [
        dt.datetime(2026, 12, 2, 1, 2, 3, 456789, tzinfo=dt.UTC),
        dt.datetime(1, 1, 1, 0, 0, 0, 5, tzinfo=dt.UTC),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
        dt.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=dt.timezone(dt.timedelta(hours=5))),
        dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
    ],
)
def test_datetime_to_timestamp__any_moment__as_from_datetime(moment: dt.datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(moment)

    assert datetime_to_timestamp(moment) == expected


def test_datetime_to_timestamp__naive__read_as_utc() -> None:
    naive = dt.datetime(2026, 1, 2, 3, 4, 5)

    assert datetime_to_timestamp(naive) == datetime_to_timestamp(naive.replace(tzinfo=dt.UTC))
    assert datetime_to_timestamp(naive).seconds == 1767323045
