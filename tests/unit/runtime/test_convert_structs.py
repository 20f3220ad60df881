"""struct_to_dict reads a Struct as json_format.MessageToDict does, whole numbers as int."""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from hypothesis import given
from hypothesis import strategies as st

from tessera.convert import struct_to_dict


def _reference(struct: struct_pb2.Struct) -> dict[str, Any]:
    """The reading struct_to_dict replaced: json_format, then whole floats as int."""

    def plain(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return {k: plain(v) for k, v in json_format.MessageToDict(struct).items()}


scalars = (
    st.none()
    | st.booleans()
    | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**60), 2**60)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=6), values, max_size=6))
def test_struct_to_dict__any_struct__as_json_format_reads_it(content: dict[str, Any]) -> None:
    struct = struct_pb2.Struct()
    struct.update(content)

    assert struct_to_dict(struct) == _reference(struct)


def test_struct_to_dict__value_with_nothing_set__none() -> None:
    struct = struct_pb2.Struct()
    struct.fields["unset"].CopyFrom(struct_pb2.Value())

    assert struct_to_dict(struct) == {"unset": None} == _reference(struct)


@pytest.mark.parametrize("number", [math.inf, -math.inf, math.nan])
def test_struct_to_dict__not_finite__refused_like_json_format(number: float) -> None:
    struct = struct_pb2.Struct()
    struct.update({"x": number})

    with pytest.raises(ValueError, match="Fail to serialize") as ours:
        struct_to_dict(struct)
    with pytest.raises(ValueError) as theirs:
        _reference(struct)
    assert str(ours.value) == str(theirs.value)
