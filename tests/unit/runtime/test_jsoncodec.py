"""tessera.jsoncodec writes and reads what the json module did."""

from __future__ import annotations

import json

from tessera import jsoncodec


def test_dumps__plain_values__same_value_as_json_reads_it() -> None:
    value = {"a": [1, 2.5, None, True], "b": {"c": "é"}, "n": 2**63 - 1}

    assert json.loads(jsoncodec.dumps(value)) == value
    assert jsoncodec.loads(json.dumps(value)) == value


def test_dumps__int_keys__strings_as_json_makes_them() -> None:
    assert jsoncodec.loads(jsoncodec.dumps({1: "x"})) == json.loads(json.dumps({1: "x"}))


def test_dumps__integer_past_64_bits__falls_back_to_json() -> None:
    assert jsoncodec.loads(jsoncodec.dumps({"big": 2**70})) == {"big": 2**70}


def test_loads__nan_written_by_json__read_as_json_reads_it() -> None:
    read = jsoncodec.loads(json.dumps({"x": float("inf")}))

    assert read == {"x": float("inf")}


def test_dump_bytes__utf8_json() -> None:
    assert jsoncodec.dump_bytes({"merged_into": "p1"}) == b'{"merged_into":"p1"}'
