"""The monitoring shipped with the manifests (deploy/k8s/base/monitoring), read back from the
rendered overlays: the PodMonitor and PrometheusRule against prometheus-operator's CRD schemas
(third_party/prometheus-operator), the Grafana dashboard's ConfigMap, and the PromQL of both,
parsed with promql_parser. `referenced_metrics()` names every metric the rules and the dashboard
read, so a test of the real processes can check that they export them."""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import promql_parser

from tests.deploy.test_manifests import ROOT, kinds

SCHEMAS = ROOT / "third_party/prometheus-operator"
SCHEMA_FILES = {
    "PodMonitor": "podmonitor.schema.json",
    "PrometheusRule": "prometheusrule.schema.json",
}
RUNBOOK_URL_PREFIX = "https://github.com/imagery/imagery/blob/main/"
RUNBOOK = ROOT / "docs/runbooks/alerts.md"
SEVERITIES = {"page", "ticket"}
DASHBOARD_LABEL = "grafana_dashboard"
# Grafana's variables as the query sees them once Grafana has substituted them. The namespace
# stands for the variable, so a check can tell it from a namespace written into a query.
NAMESPACE_VARIABLE = "grafana-variable-namespace"
GRAFANA_VARIABLES = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "namespace": NAMESPACE_VARIABLE,
}
# Gauges only the processor holding the lease exports: summed across pods, a pod that held it
# before would count twice.
LEASE_HELD = frozenset({"imagery_queue_messages", "imagery_table_rows"})
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?\w+\)$")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


# --- the CRDs --------------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused, as `kubectl apply --validate=strict` does: every
    object schema that lists its properties (and is not a map or a preserve-unknown-fields
    object) gets `additionalProperties: false`."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        out.get("properties")
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = strict(json.loads((SCHEMAS / SCHEMA_FILES[kind]).read_text()))
    return schema


def validate(document: dict[str, Any]) -> None:
    """Raises jsonschema.ValidationError where the object breaks its CRD's schema."""
    jsonschema.validate(document, crd_schema(document["kind"]))


# --- label selectors -------------------------------------------------------------------------


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics (matchLabels and matchExpressions, ANDed)."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = set(expression.get("values", []))
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


# --- rules -----------------------------------------------------------------------------------


def rules(overlay: str) -> list[dict[str, Any]]:
    return [
        rule
        for document in kinds(overlay, "PrometheusRule")
        for group in document["spec"]["groups"]
        for rule in group["rules"]
    ]


def alerts(overlay: str) -> list[dict[str, Any]]:
    return [rule for rule in rules(overlay) if "alert" in rule]


def recorded(overlay: str) -> set[str]:
    return {rule["record"] for rule in rules(overlay) if "record" in rule}


# --- the dashboard ---------------------------------------------------------------------------


def dashboard_configmaps(overlay: str) -> list[dict[str, Any]]:
    return [
        config
        for config in kinds(overlay, "ConfigMap")
        if DASHBOARD_LABEL in config["metadata"].get("labels", {})
    ]


def dashboard(overlay: str) -> dict[str, Any]:
    (config,) = dashboard_configmaps(overlay)
    (text,) = config["data"].values()
    board: dict[str, Any] = json.loads(text)
    return board


def all_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside (collapsed) rows included."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def substitute(expr: str, variables: dict[str, str] = GRAFANA_VARIABLES) -> str:
    """The query as Grafana sends it; a variable the dashboard does not define fails."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in variables:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")
        return variables[name]

    return _VARIABLE.sub(value, expr)


def dashboard_expressions(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and of each query variable's series selector,
    with Grafana's variables substituted."""
    found = []
    for panel in all_panels(board):
        for target in panel.get("targets", []):
            if "expr" in target:
                found.append((f"panel {panel['title']!r}", substitute(target["expr"])))
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text.strip())
        if match is None:
            raise ValueError(f"variable {variable['name']}: not label_values(...): {text!r}")
        if match.group(1):
            found.append((f"variable {variable['name']!r}", substitute(match.group(1))))
    return found


def dashboard_problems(board: dict[str, Any]) -> list[str]:
    """What keeps the dashboard from loading or from following the namespace it is shown for."""
    problems = []
    ids = [panel.get("id") for panel in all_panels(board)]
    if None in ids or len(ids) != len(set(ids)):
        problems.append(f"panel ids are missing or repeated: {ids}")
    variables = {v["name"]: v for v in board.get("templating", {}).get("list", [])}
    source = variables.get("datasource", {})
    if (source.get("type"), source.get("query")) != ("datasource", "prometheus"):
        problems.append("no `datasource` variable of Prometheus data sources")
    if variables.get("namespace", {}).get("type") != "query":
        problems.append("no `namespace` query variable")
    for panel in all_panels(board):
        if panel["type"] == "row":
            continue
        title = panel.get("title")
        if not panel.get("targets"):
            problems.append(f"panel {title!r} has no query")
        for holder in (panel, *panel.get("targets", [])):
            if holder.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"panel {title!r} does not query ${{datasource}}")
    for where, expr in dashboard_expressions(board):
        try:
            selectors = vector_selectors(parse(expr))
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        for selector in selectors:
            namespaces = [m.value for m in selector.matchers.matchers if m.name == "namespace"]
            if where.startswith("panel") and namespaces != [NAMESPACE_VARIABLE]:
                problems.append(f"{where}: {selector} is not limited to $namespace")
    return problems


# --- PromQL ----------------------------------------------------------------------------------


def parse(expr: str) -> promql_parser.Expr:
    """The expression's AST; ValueError naming the expression when it does not parse."""
    try:
        return promql_parser.parse(expr)
    except ValueError as exc:
        raise ValueError(f"{exc}: {expr!r}") from exc


def expressions(overlay: str) -> list[tuple[str, str]]:
    """(where, PromQL) of every recording rule, alert and dashboard query of the overlay."""
    found = [
        (f"rule {rule.get('alert') or rule.get('record')!r}", str(rule["expr"]))
        for rule in rules(overlay)
    ]
    return found + dashboard_expressions(dashboard(overlay))


def vector_selectors(ast: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(ast, visit)
    return found


def selector_name(selector: promql_parser.VectorSelector) -> str:
    if selector.name:
        return selector.name
    (name,) = [m.value for m in selector.matchers.matchers if m.name == "__name__"]
    return name


def children(node: promql_parser.Expr) -> list[promql_parser.Expr]:
    if isinstance(node, promql_parser.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    if isinstance(node, promql_parser.Call):
        return [arg for arg in node.args if isinstance(arg, promql_parser.Expr)]
    if isinstance(node, promql_parser.AggregateExpr):
        param = [node.param] if isinstance(node.param, promql_parser.Expr) else []
        return [node.expr, *param]
    if isinstance(
        node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr
    ):
        return [node.expr]
    return []


def summed_lease_gauges(ast: promql_parser.Expr) -> list[str]:
    """Lease-held gauges a `sum` adds up across pods: reached from a sum without another
    aggregation (a max across pods, say) in between."""
    found = []

    def under_sum(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.AggregateExpr):
            return  # aggregated again first: its own check covers it
        if isinstance(node, promql_parser.VectorSelector) and selector_name(node) in LEASE_HELD:
            found.append(str(node))
        for child in children(node):
            under_sum(child)

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.AggregateExpr) and str(node.op) == "sum":
            under_sum(node.expr)

    promql_parser.walk(ast, visit)
    return found


def base_name(name: str, histograms: set[str]) -> str:
    """A histogram's series name without `_bucket`, `_count` or `_sum`. `_count` and `_sum` go
    only from a histogram's (one read as `_bucket` too, or in seconds), since a gauge may end
    in `_count` (db_client_connection_count)."""
    if name.endswith("_bucket"):
        return name.removesuffix("_bucket")
    for suffix in ("_count", "_sum"):
        base = name.removesuffix(suffix)
        if name.endswith(suffix) and (base in histograms or base.endswith("_seconds")):
            return base
    return name


def metric_names(exprs: list[str], exclude: AbstractSet[str] = frozenset()) -> set[str]:
    names = {
        selector_name(selector) for expr in exprs for selector in vector_selectors(parse(expr))
    }
    histograms = {name.removesuffix("_bucket") for name in names if name.endswith("_bucket")}
    return {base_name(name, histograms) for name in names} - exclude


def referenced_metrics() -> set[str]:
    """The metrics (histograms by their base name) the shipped rules and dashboard read;
    the rules' own recorded series are left out: Prometheus makes those."""
    overlay = "prod"
    return metric_names([expr for _, expr in expressions(overlay)], exclude=recorded(overlay))


# --- the runbook -----------------------------------------------------------------------------


def github_anchor(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(markdown: str) -> list[tuple[int, str]]:
    """(level, text) of each heading outside fenced code."""
    found, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (match := _HEADING.match(line)):
            found.append((len(match.group(1)), match.group(2)))
    return found


def runbook_problems(alert_rules: list[dict[str, Any]], markdown: str, path: Path) -> list[str]:
    """Alerts without severity, summary, description or a runbook section; sections of the
    runbook (below its title) that are no alert's; in-page links to no section."""
    problems = []
    sections = {github_anchor(text) for level, text in headings(markdown) if level > 1}
    wanted = set()
    for rule in alert_rules:
        name, labels = rule["alert"], rule.get("labels", {})
        annotations = rule.get("annotations", {})
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity {labels.get('severity')!r} not in {SEVERITIES}")
        for key in ("summary", "description"):
            if not annotations.get(key, "").strip():
                problems.append(f"{name}: no {key}")
        url = annotations.get("runbook_url", "")
        page, _, anchor = url.removeprefix(RUNBOOK_URL_PREFIX).partition("#")
        if not url.startswith(RUNBOOK_URL_PREFIX) or ROOT / page != path:
            problems.append(f"{name}: runbook_url {url!r} is not {path.relative_to(ROOT)}")
        if anchor not in sections:
            problems.append(f"{name}: no section #{anchor} in {path.name}")
        wanted.add(anchor)
    problems += [f"section #{s} is no alert's" for s in sorted(sections - wanted)]
    for link in re.findall(r"\]\(#([^)\s]+)\)", markdown):
        if link not in sections:
            problems.append(f"link to #{link}, which is no section")
    if [level for level, _ in headings(markdown)].count(1) != 1:
        problems.append("the runbook has not exactly one title (#)")
    return problems


def mutable(document: dict[str, Any]) -> dict[str, Any]:
    """A copy to break in a test (render() is cached)."""
    return copy.deepcopy(document)
