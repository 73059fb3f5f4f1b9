"""deploy/k8s/rollout, the plain-kubectl release, run against a kubectl that records what it
is asked (there is no cluster here): the order Argo CD and Flux take from the Job's
annotations, and a stop when the migrations fail."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.deploy.test_manifests import kinds

ROOT = Path(__file__).resolve().parents[2]
ROLLOUT = ROOT / "deploy/k8s/rollout"


def _run(tmp_path: Path, *, job_completes: bool) -> tuple[int, list[str], str]:
    calls = tmp_path / "calls"
    kubectl = tmp_path / "bin" / "kubectl"
    kubectl.parent.mkdir()
    state = "Complete" if job_completes else "Failed"
    kubectl.write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\n'
        f'case "$*" in *"get job imagery-migrate"*) printf {state};; esac\nexit 0\n'
    )
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IXUSR)
    done = subprocess.run(
        [str(ROLLOUT), "deploy/k8s/overlays/prod"],
        cwd=ROOT,
        env={
            **os.environ,
            "PATH": f"{kubectl.parent}:{os.environ['PATH']}",
            "ROLLOUT_POLL_SECONDS": "0",
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode, calls.read_text().splitlines(), done.stderr


def test_the_old_job_goes_the_migrations_run_then_the_deployments_roll(tmp_path: Path) -> None:
    code, calls, _ = _run(tmp_path, job_completes=True)
    assert code == 0
    ns = "--namespace imagery"
    assert calls == [
        f"{ns} delete job imagery-migrate --ignore-not-found --wait=true",
        f"{ns} apply -k deploy/k8s/overlays/prod",
        f"{ns} get job imagery-migrate"
        ' -o jsonpath={.status.conditions[?(@.status=="True")].type}',
        f"{ns} rollout status deployment/imagery-processor --timeout=10m",
        f"{ns} rollout status deployment/imagery-upload --timeout=10m",
        f"{ns} rollout status deployment/imagery-delivery --timeout=10m",
    ]


def test_a_failed_migration_stops_the_rollout_naming_what_to_read(tmp_path: Path) -> None:
    code, calls, stderr = _run(tmp_path, job_completes=False)
    assert code == 1, "a failed Job stops it at once, not after the timeout"
    assert sum("get job" in call for call in calls) == 1
    assert not any("rollout status" in call for call in calls)
    assert "kubectl -n imagery logs job/imagery-migrate" in stderr


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_gitops_tools_rerun_the_migrations_before_the_rest(overlay: str) -> None:
    (job,) = kinds(overlay, "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "PreSync"
    assert annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"
    assert annotations["kustomize.toolkit.fluxcd.io/force"] == "enabled"
    for deployment in kinds(overlay, "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        startup = container["startupProbe"]
        waits = startup["periodSeconds"] * startup["failureThreshold"]
        assert waits > 600, "the startup probe outlasts SCHEMA_WAIT_SECONDS (600)"
        assert startup["grpc"]["port"] == container["livenessProbe"]["grpc"]["port"]
