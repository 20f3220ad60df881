"""The benchmark's summaries: percentiles, throughput and Decide/echo ratios per mode.

Expected percentiles follow numpy's default (linear) method, the same as
Excel's PERCENTILE.INC: rank = p/100 * (n - 1), interpolated between neighbours.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.load import split
from bench.report import FLOOR_TITLES, format_table
from bench.run import round_order
from bench.stats import Sample, percentiles_ms, ratio, ratios, summarise, summarise_rounds

MS = 1_000_000  # nanoseconds per millisecond


def test_percentiles_ms__one_to_hundred_ms__linear_interpolation() -> None:
    latencies = [i * MS for i in range(1, 101)]

    p50, p90, p99 = percentiles_ms(latencies)

    # rank 49.5 -> between 50 and 51 ms; rank 89.1 -> 90.1 ms; rank 98.01 -> 99.01 ms
    assert p50 == pytest.approx(50.5)
    assert p90 == pytest.approx(90.1)
    assert p99 == pytest.approx(99.01)


def test_percentiles_ms__single_value__every_percentile_is_it() -> None:
    assert percentiles_ms([2_500_000]) == [2.5, 2.5, 2.5]


def test_percentiles_ms__nothing_recorded__none_not_zero() -> None:
    assert percentiles_ms([]) == [None, None, None]


def test_summarise__counts_throughput_and_errors_apart() -> None:
    latencies = [1 * MS, 2 * MS, 3 * MS, 4 * MS]

    summary = summarise("echo", 16, latencies, window_s=2.0, error_codes={"UNAVAILABLE": 3})

    assert summary.requests == 4
    assert summary.errors == 3
    assert summary.throughput_rps == 2.0  # errors are not throughput
    assert summary.p50_ms == pytest.approx(2.5)
    assert summary.mean_ms == pytest.approx(2.5)
    assert summary.max_ms == pytest.approx(4.0)
    assert summary.error_codes == {"UNAVAILABLE": 3}


def test_summarise__empty_window__zero_throughput_no_latency() -> None:
    summary = summarise("decide", 1, [], window_s=0.0)

    assert (summary.requests, summary.throughput_rps, summary.p99_ms) == (0, 0.0, None)


def test_summarise__mode_follows_target() -> None:
    modes = [summarise(t, 1, [MS], 1.0).mode for t in ("echo", "decide", "decide-rpc")]

    assert modes == [None, "in_process", "rpc"]


def _sample(milliseconds: list[int], window_s: float, **errors: int) -> Sample:
    return Sample(np.asarray([m * MS for m in milliseconds], dtype=np.int64), window_s, errors)


def test_summarise_rounds__pooled_percentiles_added_windows_and_errors() -> None:
    rounds = [_sample([1, 2, 3], 1.0, UNAVAILABLE=1), _sample([10, 20], 0.5, UNAVAILABLE=2)]

    summary = summarise_rounds("decide", 1, rounds)

    # Five latencies 1, 2, 3, 10, 20 ms: the pooled median is 3 ms, not a mean of medians.
    assert summary.requests == 5
    assert summary.p50_ms == pytest.approx(3.0)
    assert summary.throughput_rps == pytest.approx(5 / 1.5)
    assert summary.error_codes == {"UNAVAILABLE": 3}
    assert summary.round_p50_ms == (pytest.approx(2.0), pytest.approx(15.0))


def test_summarise_rounds__one_round__as_summarise() -> None:
    summary = summarise_rounds("echo", 16, [_sample([1, 2, 3, 4], 2.0)])

    assert summary == summarise("echo", 16, [MS, 2 * MS, 3 * MS, 4 * MS], 2.0)
    assert summary.round_p50_ms == ()


def test_ratio__rounds__each_round_over_echo_of_the_same_round() -> None:
    echo = summarise_rounds("echo", 1, [_sample([1], 1.0), _sample([2], 1.0)])
    decide = summarise_rounds("decide", 1, [_sample([3], 1.0), _sample([5], 1.0)])

    assert ratio(decide, echo).round_p50 == (pytest.approx(3.0), pytest.approx(2.5))


def test_ratio__decide_over_echo() -> None:
    echo = summarise("echo", 16, [1 * MS] * 10, window_s=1.0)
    decide = summarise("decide", 16, [4 * MS] * 5, window_s=1.0)

    result = ratio(decide, echo)

    assert (result.target, result.mode, result.concurrency) == ("decide", "in_process", 16)
    assert result.p50 == pytest.approx(4.0)
    assert result.p99 == pytest.approx(4.0)
    assert result.throughput == pytest.approx(0.5)


def test_ratio__decide_rpc_over_echo__carries_rpc_mode() -> None:
    # echo: 1..100 ms in 2 s -> p50 50.5, p99 99.01, 50 req/s
    echo = summarise("echo", 1, [i * MS for i in range(1, 101)], window_s=2.0)
    # decide-rpc: 3..300 ms in 10 s -> p50 151.5, p99 297.03, 10 req/s
    rpc = summarise("decide-rpc", 1, [3 * i * MS for i in range(1, 101)], window_s=10.0)

    result = ratio(rpc, echo)

    assert (result.target, result.mode) == ("decide-rpc", "rpc")
    assert result.p50 == pytest.approx(3.0)
    assert result.p99 == pytest.approx(3.0)
    assert result.throughput == pytest.approx(0.2)


def test_ratio__echo_without_data__none() -> None:
    echo = summarise("echo", 1, [], window_s=1.0)
    decide = summarise("decide", 1, [MS], window_s=1.0)

    result = ratio(decide, echo)

    assert (result.p50, result.p99, result.throughput) == (None, None, None)


def test_ratio__different_concurrency__refused() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        ratio(summarise("decide-rpc", 1, [MS], 1.0), summarise("echo", 16, [MS], 1.0))


def test_ratios__each_mode_against_echo_at_its_concurrency() -> None:
    levels = [
        summarise("echo", 1, [MS], 1.0),
        summarise("decide", 1, [2 * MS], 1.0),
        summarise("decide-rpc", 1, [5 * MS], 1.0),
        summarise("echo", 16, [2 * MS] * 8, 1.0),
        summarise("decide-rpc", 16, [6 * MS] * 2, 1.0),  # listed before decide: order by mode
        summarise("decide", 16, [4 * MS] * 4, 1.0),
    ]

    result = ratios(levels)

    assert [(r.concurrency, r.mode) for r in result] == [
        (1, "in_process"),
        (1, "rpc"),
        (16, "in_process"),
        (16, "rpc"),
    ]
    assert [r.p50 for r in result] == pytest.approx([2.0, 5.0, 2.0, 3.0])
    assert [r.throughput for r in result] == pytest.approx([1.0, 1.0, 0.5, 0.25])


def test_ratios__only_levels_with_echo_and_a_decide_target() -> None:
    levels = [
        summarise("echo", 1, [MS], 1.0),
        summarise("decide-rpc", 1, [2 * MS], 1.0),  # in_process skipped (--modes rpc)
        summarise("echo", 16, [MS], 1.0),  # no Decide at 16
        summarise("decide", 64, [MS], 1.0),  # no echo at 64
    ]

    result = ratios(levels)

    assert [(r.concurrency, r.target) for r in result] == [(1, "decide-rpc")]
    assert result[0].p50 == pytest.approx(2.0)


def test_ratios__relay__over_echo_then_decide_over_the_relay() -> None:
    levels = [
        summarise("echo", 1, [2 * MS] * 8, 1.0),
        summarise("relay", 1, [3 * MS] * 4, 1.0),
        summarise("decide", 1, [6 * MS] * 2, 1.0),
        summarise("decide-rpc", 1, [12 * MS], 1.0),
    ]

    result = ratios(levels)

    assert [(r.floor, r.target) for r in result] == [
        ("echo", "relay"),
        ("echo", "decide"),
        ("echo", "decide-rpc"),
        ("relay", "decide"),
        ("relay", "decide-rpc"),
    ]
    assert [r.p50 for r in result] == pytest.approx([1.5, 3.0, 6.0, 2.0, 4.0])
    assert [r.throughput for r in result] == pytest.approx([0.5, 0.25, 0.125, 0.5, 0.25])


def test_format_table__a_block_of_ratios_per_floor() -> None:
    levels = [
        summarise("echo", 1, [2 * MS], 1.0),
        summarise("relay", 1, [3 * MS], 1.0),
        summarise("decide", 1, [6 * MS], 1.0),
    ]

    lines = format_table(levels, ratios(levels)).splitlines()

    echo_block = lines.index(FLOOR_TITLES["echo"])
    relay_block = lines.index(FLOOR_TITLES["relay"])
    assert echo_block < relay_block
    assert [line.split()[1:4] for line in lines[echo_block + 2 : relay_block - 1]] == [
        ["relay", "-", "1.50x"],
        ["decide", "in_process", "3.00x"],
    ]
    assert [line.split()[1:4] for line in lines[relay_block + 2 :]] == [
        ["decide", "in_process", "2.00x"]
    ]


@pytest.mark.parametrize(
    ("concurrency", "processes", "expected"),
    [(1, 2, [1, 0]), (16, 2, [8, 8]), (65, 2, [33, 32]), (5, 3, [2, 2, 1])],
)
def test_split__workers_spread_evenly_and_sum_to_concurrency(
    concurrency: int, processes: int, expected: list[int]
) -> None:
    assert split(concurrency, processes) == expected


def test_round_order__each_round_starts_one_further__every_target_once() -> None:
    phase = ["echo", "decide", "get-profile"]

    orders = [round_order(phase, index) for index in range(4)]

    assert orders == [
        ["echo", "decide", "get-profile"],
        ["decide", "get-profile", "echo"],
        ["get-profile", "echo", "decide"],
        ["echo", "decide", "get-profile"],
    ]


def test_round_order__no_targets__empty() -> None:
    # The writes with --skip-profiles, or when the suite never answered.
    assert round_order([], 0) == []
