"""The monitoring shipped with the manifests, as an SRE would review it before applying it: the
PodMonitor and PrometheusRule valid for prometheus-operator, the scrape reaching each part's
metrics port, every PromQL expression parsing, every alert labelled and runbooked, the Grafana
dashboard loadable and scoped to its namespace, and every metric one that was agreed."""

from __future__ import annotations

import re
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import promql_parser
import pytest

from tests.deploy import monitoring
from tests.deploy.test_manifests import OVERLAYS, kinds

PARTS = {"upload", "delivery", "processor"}
METRICS_PORT = 9464
SERVER_FAULTS = {"2", "4", "13", "14", "15"}  # UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, ...
# The names the services export (OpenTelemetry instruments as Prometheus sees them), agreed
# with the telemetry code; histograms by their base name.
AGREED_METRICS = {
    "rpc_server_call_duration_seconds",
    "imagery_processor_upload_to_ready_seconds",
    "imagery_processor_stage_duration_seconds",
    "imagery_processor_render_duration_seconds",
    "imagery_processor_jobs_total",
    "imagery_processor_messages_in_flight",
    "imagery_processor_messages_deferred_total",
    "imagery_processor_message_age_seconds",
    "imagery_processor_consumer_state",
    "imagery_processor_variants_over_budget_total",
    "imagery_queue_messages",
    "imagery_table_rows",
    "imagery_retention_prune_failures_total",
    "imagery_events_outbox_age_seconds",
    "db_client_connection_count",
    "db_client_connection_pending_requests",
    "imagery_database_up",
    "imagery_delivery_urls_signed_total",
    "imagery_delivery_signing_failures_total",
    "imagery_delivery_signature_cache_lookups_total",
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_monitoring_objects_validate_against_the_crds(overlay: str) -> None:
    objects = kinds(overlay, "PodMonitor") + kinds(overlay, "PrometheusRule")
    assert {o["kind"] for o in objects} == {"PodMonitor", "PrometheusRule"}
    for document in objects:
        monitoring.validate(document)


def test_the_crd_check_catches_mistakes() -> None:
    (pod_monitor,) = kinds("prod", "PodMonitor")
    (rule,) = kinds("prod", "PrometheusRule")
    typo = monitoring.mutable(pod_monitor)
    typo["spec"]["podMetricsEndpoints"][0]["prot"] = "metrics"
    no_selector = monitoring.mutable(pod_monitor)
    del no_selector["spec"]["selector"]
    bad_interval = monitoring.mutable(pod_monitor)
    bad_interval["spec"]["podMetricsEndpoints"][0]["interval"] = "30 seconds"
    no_expr = monitoring.mutable(rule)
    del no_expr["spec"]["groups"][0]["rules"][0]["expr"]
    numeric_label = monitoring.mutable(rule)
    numeric_label["spec"]["groups"][0]["rules"][0]["labels"]["severity"] = 1
    for broken in (typo, no_selector, bad_interval, no_expr, numeric_label):
        with pytest.raises(jsonschema.ValidationError):
            monitoring.validate(broken)


def check_scraped(overlay: str, pod_monitors: list[dict[str, Any]]) -> None:
    """Each part's pods are selected, on a container port that serves METRICS_PORT, which a
    NetworkPolicy admits; series are labelled with the part."""
    policies = kinds(overlay, "NetworkPolicy")
    parts = [
        d
        for d in kinds(overlay, "Deployment")
        if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") in PARTS
    ]
    assert {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] for d in parts
    } == PARTS
    for deployment in parts:
        name, template = deployment["metadata"]["name"], deployment["spec"]["template"]
        labels = template["metadata"]["labels"]
        monitors = [m for m in pod_monitors if monitoring.selects(m["spec"]["selector"], labels)]
        assert len(monitors) == 1, f"{name}: scraped by {len(monitors)} PodMonitors"
        spec = monitors[0]["spec"]
        assert "namespaceSelector" not in spec, "the pods are in the PodMonitor's namespace"
        assert "app.kubernetes.io/component" in spec.get("podTargetLabels", []), name
        (container,) = template["spec"]["containers"]
        ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
        for endpoint in spec["podMetricsEndpoints"]:
            assert ports.get(endpoint["port"]) == METRICS_PORT, (name, endpoint["port"])
            assert endpoint.get("path", "/metrics") == "/metrics", name
        admitted = [
            p
            for p in policies
            if monitoring.selects(p["spec"]["podSelector"], labels)
            and any(
                port.get("port") == METRICS_PORT
                for rule in p["spec"].get("ingress", [])
                for port in rule.get("ports", [])
            )
        ]
        assert admitted, f"{name}: no NetworkPolicy lets Prometheus reach {METRICS_PORT}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_part_is_scraped_on_its_metrics_port(overlay: str) -> None:
    check_scraped(overlay, kinds(overlay, "PodMonitor"))


def test_the_scrape_check_catches_a_wrong_port_or_selector() -> None:
    (pod_monitor,) = kinds("prod", "PodMonitor")
    wrong_port = monitoring.mutable(pod_monitor)
    wrong_port["spec"]["podMetricsEndpoints"][0]["port"] = "grpc"
    narrow = monitoring.mutable(pod_monitor)
    narrow["spec"]["selector"] = {"matchLabels": {"app.kubernetes.io/component": "upload"}}
    unlabelled = monitoring.mutable(pod_monitor)
    del unlabelled["spec"]["podTargetLabels"]
    for broken in (wrong_port, narrow, unlabelled):
        with pytest.raises(AssertionError):
            check_scraped("prod", [broken])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rule_and_dashboard_query_parses(overlay: str) -> None:
    found = monitoring.expressions(overlay)
    assert len(found) >= 30
    for _, expr in found:
        monitoring.parse(expr)


def test_a_broken_query_does_not_pass() -> None:
    for broken in (
        "sum(rate(imagery_processor_jobs_total[5m])",  # unclosed
        "rate(imagery_processor_jobs_total)",  # a vector where a range is needed
        "histogram_quantil(0.99, x)",  # no such function
    ):
        with pytest.raises(ValueError, match=re.escape(repr(broken))):
            monitoring.parse(broken)
    with pytest.raises(ValueError, match="unknown Grafana variable"):
        monitoring.substitute('up{namespace="$cluster"}')
    assert monitoring.substitute("rate(x[$__rate_interval]) * ${namespace}") == (
        f"rate(x[5m]) * {monitoring.NAMESPACE_VARIABLE}"
    )


def test_every_alert_is_labelled_and_has_its_runbook_section() -> None:
    alerts = monitoring.alerts("prod")
    assert {a["alert"] for a in alerts} >= {
        "ImageryRPCErrorRatio",
        "ImageryLatencySLOBurn",
        "ImageryUploadToReadySlow",
        "ImageryQueueAge",
        "ImageryDeadLetterQueueNotEmpty",
        "ImageryProcessorStalled",
        "ImageryDatabaseUnavailable",
        "ImagerySigningFailures",
        "ImageryRetentionBacklog",
    }
    text = monitoring.RUNBOOK.read_text()
    assert monitoring.runbook_problems(alerts, text, monitoring.RUNBOOK) == []


def test_the_runbook_check_catches_what_it_is_for() -> None:
    alerts = monitoring.mutable({"rules": monitoring.alerts("prod")})["rules"]
    text = monitoring.RUNBOOK.read_text()
    path = monitoring.RUNBOOK
    without_section = text.replace("## ImageryQueueAge", "ImageryQueueAge")
    assert monitoring.runbook_problems(alerts, without_section, path) == [
        "ImageryQueueAge: no section #imageryqueueage in alerts.md"
    ]
    extra = text + "\n## ImageryNothing\n"
    assert monitoring.runbook_problems(alerts, extra, path) == [
        "section #imagerynothing is no alert's"
    ]
    del alerts[0]["labels"]["severity"]
    alerts[1]["annotations"]["runbook_url"] += "-typo"
    problems = monitoring.runbook_problems(alerts, text, path)
    assert len(problems) == 2, problems
    assert monitoring.github_anchor("Imagery RPC: error ratio (5m)") == "imagery-rpc-error-ratio-5m"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_dashboard_ships_as_a_grafana_sidecar_configmap(overlay: str) -> None:
    (config,) = monitoring.dashboard_configmaps(overlay)
    assert config["metadata"]["labels"][monitoring.DASHBOARD_LABEL] == "1"
    assert config["metadata"]["name"] == "imagery-grafana-dashboard", "no hash suffix"
    (key,) = config["data"]
    assert key.endswith(".json")
    board = monitoring.dashboard(overlay)
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    assert len([p for p in monitoring.all_panels(board) if p["type"] != "row"]) >= 15
    assert monitoring.dashboard_problems(board) == []


def test_the_dashboard_check_catches_what_it_is_for() -> None:
    board = monitoring.mutable(monitoring.dashboard("prod"))
    panels = [p for p in board["panels"] if p["type"] != "row"]
    panels[1]["id"] = panels[0]["id"]
    panels[2]["targets"][0]["expr"] = panels[2]["targets"][0]["expr"].replace(
        'namespace="${namespace}"', 'namespace="imagery"'
    )
    panels[3]["datasource"] = {"type": "prometheus", "uid": "prometheus"}
    panels[4]["targets"][0]["expr"] += ")"
    problems = monitoring.dashboard_problems(board)
    assert len(problems) == 4, problems


def test_the_rules_and_the_dashboard_read_the_agreed_metrics() -> None:
    """Every metric read is one the services export (a typo reads nothing, silently), and each
    of those has a panel or a rule."""
    assert monitoring.referenced_metrics() == AGREED_METRICS
    assert monitoring.metric_names(
        ["rate(x_seconds_count[5m]) + db_client_connection_count + rate(y_bucket[5m]) + y_sum"]
    ) == {"x_seconds", "db_client_connection_count", "y"}


def test_lease_held_gauges_are_never_summed_across_pods() -> None:
    for where, expr in monitoring.expressions("prod"):
        assert monitoring.summed_lease_gauges(monitoring.parse(expr)) == [], where
    summed = monitoring.parse('sum by (state) (imagery_queue_messages{queue="uploads"}) > 0')
    assert monitoring.summed_lease_gauges(summed) != []
    added = monitoring.parse("sum(max by (state) (imagery_queue_messages))")
    assert monitoring.summed_lease_gauges(added) == []


def _matchers(selector: Any) -> dict[str, tuple[str, str]]:
    return {m.name: (str(m.op).rpartition(".")[2], m.value) for m in selector.matchers.matchers}


def test_the_error_ratio_counts_only_server_faults() -> None:
    (rule,) = [a for a in monitoring.alerts("prod") if a["alert"] == "ImageryRPCErrorRatio"]
    selectors = monitoring.vector_selectors(monitoring.parse(rule["expr"]))
    codes = [m for s in selectors if (m := _matchers(s).get("rpc_grpc_status_code"))]
    assert len(codes) == 1 and codes[0][0] == "Re", codes
    assert set(codes[0][1].split("|")) == SERVER_FAULTS


def _ranges(ast: promql_parser.Expr) -> set[str]:
    found = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.MatrixSelector):
            found.add(promql_parser.display_duration(node.range))

    promql_parser.walk(ast, visit)
    return found


@pytest.mark.parametrize(
    ("severity", "factor", "windows"),
    [("page", "14.4", {"1h", "5m"}), ("ticket", "6", {"6h", "30m"})],
)
def test_the_latency_slo_burns_over_two_windows(
    severity: str, factor: str, windows: set[str]
) -> None:
    """SRE workbook multiwindow, multi-burn-rate alerts on 99% of unary RPCs within 0.25 s."""
    (alert,) = [
        a
        for a in monitoring.alerts("prod")
        if a["alert"] == "ImageryLatencySLOBurn" and a["labels"]["severity"] == severity
    ]
    used = {s.name for s in monitoring.vector_selectors(monitoring.parse(alert["expr"]))}
    assert used == {f"imagery:rpc_latency_slo_errors:ratio_rate{w}" for w in windows}
    assert alert["expr"].count(f"> ({factor} * 0.01)") == 2
    records = {r["record"]: r["expr"] for r in monitoring.rules("prod") if "record" in r}
    for window in windows:
        ast = monitoring.parse(records[f"imagery:rpc_latency_slo_errors:ratio_rate{window}"])
        assert _ranges(ast) == {window}
        selectors = monitoring.vector_selectors(ast)
        assert {s.name for s in selectors} == {
            "rpc_server_call_duration_seconds_bucket",
            "rpc_server_call_duration_seconds_count",
        }
        for selector in selectors:
            matchers = _matchers(selector)
            assert matchers["rpc_method"] == ("NotEqual", "WatchImage"), window
            if selector.name == "rpc_server_call_duration_seconds_bucket":
                assert matchers["le"] == ("Equal", "0.25"), window
