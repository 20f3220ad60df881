"""The benchmark's summaries: percentiles, throughput and Decide/echo ratios.

Expected percentiles follow numpy's default (linear) method, the same as
Excel's PERCENTILE.INC: rank = p/100 * (n - 1), interpolated between neighbours.
"""

from __future__ import annotations

import pytest

from bench.load import split
from bench.stats import percentiles_ms, ratio, ratios, summarise

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


def test_ratio__decide_over_echo() -> None:
    echo = summarise("echo", 16, [1 * MS] * 10, window_s=1.0)
    decide = summarise("decide", 16, [4 * MS] * 5, window_s=1.0)

    result = ratio(decide, echo)

    assert result.p50 == pytest.approx(4.0)
    assert result.p99 == pytest.approx(4.0)
    assert result.throughput == pytest.approx(0.5)


def test_ratio__echo_without_data__none() -> None:
    echo = summarise("echo", 1, [], window_s=1.0)
    decide = summarise("decide", 1, [MS], window_s=1.0)

    result = ratio(decide, echo)

    assert (result.p50, result.p99, result.throughput) == (None, None, None)


def test_ratio__different_concurrency__refused() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        ratio(summarise("decide", 1, [MS], 1.0), summarise("echo", 16, [MS], 1.0))


def test_ratios__only_levels_with_both_targets() -> None:
    levels = [
        summarise("echo", 1, [MS], 1.0),
        summarise("decide", 1, [2 * MS], 1.0),
        summarise("echo", 16, [MS], 1.0),  # Decide missing at 16
    ]

    result = ratios(levels)

    assert [(r.concurrency, r.p50) for r in result] == [(1, pytest.approx(2.0))]


@pytest.mark.parametrize(
    ("concurrency", "processes", "expected"),
    [(1, 2, [1, 0]), (16, 2, [8, 8]), (65, 2, [33, 32]), (5, 3, [2, 2, 1])],
)
def test_split__workers_spread_evenly_and_sum_to_concurrency(
    concurrency: int, processes: int, expected: list[int]
) -> None:
    assert split(concurrency, processes) == expected
