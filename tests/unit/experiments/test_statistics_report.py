"""The report: its numbers are the statistics' numbers, and it renders (table and PNG)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from rich.console import Console

from tessera import cli
from tessera.experiments import report, simulation
from tessera.experiments.domain.statistics import Sample, Verdict, compare, srm_p_value

START = datetime(2026, 3, 1, tzinfo=UTC)


def _days(samples_per_day: list[list[Sample]]) -> list[tuple[datetime, list[Sample]]]:
    return [(START + timedelta(days=i), s) for i, s in enumerate(samples_per_day)]


def test_build_report__rows_are_compare_of_the_last_day():
    daily = simulation.daily_samples([0.1, 0.13], [1, 1], 10, 2000, np.random.default_rng(1))

    built = report.build_report("exp", ["control", "b"], [1, 1], _days(daily), min_sample=100)

    control, treatment = daily[-1]
    expected = compare(control, treatment)
    row = built.variants[1]
    assert built.variants[0].is_control and built.variants[0].exposures == control.n
    assert row.relative_lift == expected.relative_lift
    assert row.relative_ci == expected.relative_ci
    assert row.sequential_p_value == expected.sequential_p_value
    assert row.chance_to_beat_control == expected.chance_to_win
    assert built.srm_p_value == srm_p_value([control.n, treatment.n], [1, 1])
    assert built.status is Verdict.SIGNIFICANT
    assert [p.at for p in built.timeline] == [at for at, _ in _days(daily)]


def test_build_report__broken_split__status_broken():
    days = _days([[Sample(5000, 500, 500), Sample(5600, 560, 560)]])

    built = report.build_report("exp", ["control", "b"], [1, 1], days, min_sample=100)

    assert built.status is Verdict.BROKEN


def test_render_table__names_variants_status_and_numbers():
    days = _days([[Sample(20000, 2000, 2000), Sample(20000, 2300, 2300)]])
    built = report.build_report("checkout", ["control", "one-click"], [1, 1], days)
    console = Console(file=io.StringIO(), width=200)

    report.render_table(built, console)

    text = console.file.getvalue()
    assert "Status: SIGNIFICANT" in text
    assert "checkout" in text and "one-click" in text
    assert "+15.00%" in text  # 11.5% over 10%
    assert "baseline" in text


def test_write_chart__writes_a_png(tmp_path):
    daily = simulation.daily_samples([0.1, 0.11], [1, 1], 5, 1000, np.random.default_rng(2))
    built = report.build_report("exp", ["control", "b"], [1, 1], _days(daily))

    path = report.write_chart(built, tmp_path / "chart.png")

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_cli_report_simulate__prints_table_and_writes_png(tmp_path, capsys):
    out = tmp_path / "report.png"

    code = cli.main(["report", "--simulate", "--out", str(out), "--days", "8"])

    printed = capsys.readouterr().out
    assert code == 0
    assert "Status:" in printed and "one-click" in printed
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_cli_report__without_simulate__says_what_to_give(capsys):
    code = cli.main(["report"])

    assert code == 2
    assert "--simulate" in capsys.readouterr().err


def test_build_report__no_data__refused():
    with pytest.raises(ValueError, match="at least one moment"):
        report.build_report("exp", ["control", "b"], [1, 1], [])
