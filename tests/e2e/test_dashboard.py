"""The Grafana dashboard (k8s/grafana/tessera.json) asks only for what the services export.

Every PromQL expression of every panel is read: each metric it selects must
be in the exposition of a running suite's four services, and each label it
matches or groups by must be one of that metric's labels or one Prometheus
adds when it scrapes a pod (namespace, pod, app: docs/operations.md).
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tessera.suite import Suite

pytestmark = pytest.mark.e2e

DASHBOARD = Path(__file__).resolve().parents[2] / "k8s" / "grafana" / "tessera.json"
TARGET_LABELS = {"namespace", "pod", "app"}
"""Labels the scrape job adds from Kubernetes (docs/operations.md, relabelling)."""
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
WORD = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
KEYWORDS = {"and", "or", "unless", "bool", "offset"}


def declared_labels(name: str) -> set[str]:
    """The label names `tessera.metrics` declares for sample `name`.

    A labelled metric nothing has counted yet is exported with its HELP and
    TYPE lines but no sample, so its labels are read from its definition
    (the same module the services export from).
    """
    from prometheus_client import REGISTRY

    import tessera.metrics  # noqa: F401  - registers the definitions

    collector = REGISTRY._names_to_collectors.get(name)  # type: ignore[attr-defined]
    return set(getattr(collector, "_labelnames", ()))


def exposition(suite: Suite) -> dict[str, set[str]]:
    """Every sample name the four services can export, with the labels of its family."""
    names: dict[str, set[str]] = {}
    for url in suite.metrics.values():
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        for family in text_string_to_metric_families(text):
            labels = {label for sample in family.samples for label in sample.labels}
            suffixes = {
                "counter": ["_total"],
                "histogram": ["_bucket", "_sum", "_count"],
                "summary": ["_sum", "_count"],
            }.get(family.type, [""])
            for name in [family.name + suffix for suffix in suffixes] + [
                sample.name for sample in family.samples
            ]:
                names.setdefault(name, set()).update(labels | declared_labels(name))
            if family.type == "histogram":
                names[family.name + "_bucket"].add("le")
    return names


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, rows' nested panels and variables included."""
    found = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            found.extend((panel["title"], t["expr"]) for t in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"${variable['name']}", variable["query"]["query"]))
    return found


def references(expression: str) -> tuple[dict[str, set[str]], set[str], set[str]]:
    """(metric -> labels it is matched on, labels grouped by, bare words left over)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\[[^\]]*\]", "", text)
    # A variable's label_values(metric{...}, label): the metric, grouped by the label.
    text = re.sub(
        r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*,\s*(\w+)\s*\)",
        lambda m: f"sum by ({m.group(3)}) ({m.group(1)}{m.group(2) or '{}'})",
        text,
    )
    grouped = {label.strip() for group in GROUPING.findall(text) for label in group.split(",")}
    text = GROUPING.sub("", text)
    selected: dict[str, set[str]] = {}
    for metric, matchers in SELECTOR.findall(text):
        selected.setdefault(metric, set()).update(MATCHER.findall(matchers))
    text = SELECTOR.sub(" ", text)
    bare = {
        word
        for word in WORD.findall(text)
        if word not in KEYWORDS and not re.search(rf"\b{re.escape(word)}\s*\(", text)
    }
    return selected, {g for g in grouped if g}, bare


def test_dashboard__every_query__metrics_and_labels_the_services_export(suite: Suite) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exposition(suite)
    queried = expressions(dashboard)
    problems = []
    metrics_seen: set[str] = set()

    for title, expression in queried:
        selected, grouped, bare = references(expression)
        if not selected:
            problems.append(f"{title}: selects no metric: {expression}")
        labels_here: set[str] = set(TARGET_LABELS)
        for metric, matched in selected.items():
            metrics_seen.add(metric)
            if metric not in exported:
                problems.append(f"{title}: {metric} is not exported")
                continue
            labels_here |= exported[metric]
            problems += [
                f"{title}: {metric} has no label {label}"
                for label in sorted(matched - exported[metric] - TARGET_LABELS)
            ]
        problems += [f"{title}: no label {label}" for label in sorted(grouped - labels_here)]
        problems += [
            f"{title}: unknown word {word}" for word in sorted(bare - labels_here - {"le"})
        ]

    assert problems == []
    # The golden signals and what the issue names are all on it.
    assert {
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "grpc_client_handling_seconds_bucket",
        "tessera_definition_lookups_total",
        "tessera_feed_head_sequence",
        "tessera_feed_consumer_sequence",
        "tessera_exposure_queue_depth",
        "tessera_exposures_dropped_total",
        "process_cpu_seconds_total",
    } <= metrics_seen


def test_dashboard__layout__unique_ids_grid_within_24_columns_and_a_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}

    assert len(ids) == len(set(ids))
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels)
    assert variables["datasource"]["type"] == "datasource"
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
