"""The report of a live experiment: GetResults, read as the report module shows it.

`tessera report <experiment-or-campaign>` renders `ExperimentReport`s
(`tessera.experiments.report`); this adapter makes one from what a running
experiment service answers, so the table and the chart show exactly the
numbers `GetResults` gives (no second computation that could disagree).
A campaign's key is taken for its experiment's (`campaign-<campaign key>`,
as the decision service names it).
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import TextIO

import grpc

from tessera.common.v1 import common_pb2
from tessera.experiments.domain.statistics import Verdict
from tessera.experiments.report import ExperimentReport, TimelinePoint, VariantRow
from tessera.experiments.v1 import experiments_pb2, experiments_pb2_grpc

__all__ = ["CAMPAIGN_PREFIX", "fetch", "report_from_results", "run"]

STATUS_FROM_PROTO = {
    experiments_pb2.RESULT_STATUS_COLLECTING: Verdict.COLLECTING,
    experiments_pb2.RESULT_STATUS_SIGNIFICANT: Verdict.SIGNIFICANT,
    experiments_pb2.RESULT_STATUS_INCONCLUSIVE: Verdict.INCONCLUSIVE,
    experiments_pb2.RESULT_STATUS_BROKEN: Verdict.BROKEN,
}
CAMPAIGN_PREFIX = "campaign-"
"""A campaign's experiment is keyed `campaign-<campaign key>`."""
TIMEOUT_S = 30.0
"""Deadline of each call: results are computed when asked."""


def _pair(low: float, high: float) -> tuple[float, float]:
    return (low, high)


def report_from_results(answer: experiments_pb2.GetResultsResponse) -> ExperimentReport:
    """The report of a GetResults answer: its rows, status, split check and timeline."""
    revenue = answer.goal.kind == common_pb2.GOAL_KIND_REVENUE
    rows: list[VariantRow] = []
    for index, variant in enumerate(answer.variants):
        measured = variant.revenue if revenue else float(variant.conversions)
        mean = variant.mean_revenue if revenue else variant.conversion_rate
        if index == 0:
            rows.append(VariantRow(variant.variant_key, True, variant.exposures, measured, mean))
            continue
        rows.append(
            VariantRow(
                variant_key=variant.variant_key,
                is_control=False,
                exposures=variant.exposures,
                conversions=measured,
                mean=mean,
                absolute_lift=variant.absolute_lift,
                relative_lift=variant.relative_lift,
                relative_ci=_pair(variant.relative_lift_ci_low, variant.relative_lift_ci_high),
                sequential_ci=_pair(
                    variant.relative_lift_sequential_ci_low,
                    variant.relative_lift_sequential_ci_high,
                ),
                p_value=variant.p_value,
                sequential_p_value=variant.sequential_p_value,
                chance_to_beat_control=variant.chance_to_beat_control,
            )
        )
    timeline: list[TimelinePoint] = []
    for day in answer.timeline:
        # Results up to the end of the day.
        at = dt.datetime.combine(
            dt.date.fromisoformat(day.date) + dt.timedelta(days=1), dt.time(), dt.UTC
        )
        for result in day.variants[1:]:
            low = result.relative_lift_sequential_ci_low
            high = result.relative_lift_sequential_ci_high
            if all(math.isfinite(v) for v in (result.relative_lift, low, high)):
                timeline.append(
                    TimelinePoint(at, result.variant_key, result.relative_lift, low, high)
                )
    return ExperimentReport(
        key=answer.experiment_key,
        status=STATUS_FROM_PROTO.get(answer.status, Verdict.COLLECTING),
        srm_p_value=answer.srm_p_value,
        variants=rows,
        timeline=timeline,
        goal="revenue" if revenue else "conversion",
    )


def fetch(address: str, key: str) -> experiments_pb2.GetResultsResponse:
    """GetResults of the experiment `key`, or else of the experiment of the campaign `key`."""
    with grpc.insecure_channel(address) as channel:
        experiments = experiments_pb2_grpc.ExperimentServiceStub(channel)
        try:
            return experiments.GetResults(
                experiments_pb2.GetResultsRequest(experiment_key=key), timeout=TIMEOUT_S
            )
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND or key.startswith(CAMPAIGN_PREFIX):
                raise
        return experiments.GetResults(
            experiments_pb2.GetResultsRequest(experiment_key=CAMPAIGN_PREFIX + key),
            timeout=TIMEOUT_S,
        )


def run(address: str, key: str, chart: Path, out: TextIO, err: TextIO) -> int:
    """Print the report of a live experiment or campaign and write its chart; an exit code.

    `address` is the experiment service's (TESSERA_EXPERIMENTS_ADDRESS).
    """
    from rich.console import Console

    from tessera.experiments import report

    try:
        answer = fetch(address, key)
    except grpc.RpcError as error:
        print(f"no results for {key!r}: {error.code().name}: {error.details()}", file=err)
        return 1
    built = report_from_results(answer)
    console = Console(file=out, width=160)
    report.render_table(built, console)
    if built.timeline:
        console.print(f"Chart of lift over time: {report.write_chart(built, chart)}")
    else:
        console.print("No chart yet: no day has enough people in two arms.")
    return 0
