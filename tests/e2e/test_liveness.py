"""The processor's liveness, as the kubelet sees it: a real processor, probed with the
rendered manifest's livenessProbe (its port's service name and failure threshold; the period
shortened), restarted the way the kubelet restarts a container. A consumer loop that stopped
turning is restarted; one paused on purpose for an outage is not, however long it lasts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagery.devstack.aws import AwsResources
from imagery.devstack.chaos import PausableProxy
from imagery.devstack.pipeline import Pipeline
from imagery.devstack.procs import free_port
from imagery.devstack.services import ServiceProcess
from tests import images, prometheus
from tests.deploy.test_manifests import kinds

pytestmark = pytest.mark.e2e

STALL_SECONDS = 6  # PROCESSOR_STALL_SECONDS here (default 180; at least the poll + 5)
POLL_SECONDS = 1  # PROCESSOR_POLL_SECONDS: an idle loop turns once a second
PERIOD_SECONDS = 0.5  # the kubelet's periodSeconds, shortened


def _liveness_probe() -> dict[str, Any]:
    (processor,) = [
        d for d in kinds("prod", "Deployment") if d["metadata"]["name"] == "imagery-processor"
    ]
    (container,) = processor["spec"]["template"]["spec"]["containers"]
    probe: dict[str, Any] = container["livenessProbe"]
    return probe


async def _status(port: int, service: str) -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


class Kubelet:
    """Probes like the kubelet: a failure is anything but SERVING; `failureThreshold`
    failures in a row restart the container (here: stop the process, note the restart)."""

    def __init__(self, process: ServiceProcess, probe: dict[str, Any]) -> None:
        self.process = process
        self.service = probe["grpc"].get("service", "")
        self.threshold = int(probe["failureThreshold"])
        self.restarts = 0
        self.seen: list[str] = []

    async def watch(self, seconds: float) -> None:
        failures = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.restarts == 0:
            status = await _status(self.process.port, self.service)
            self.seen.append(status)
            failures = 0 if status == "SERVING" else failures + 1
            if failures >= self.threshold:
                self.restarts += 1
                self.process.stop()
            await asyncio.sleep(PERIOD_SECONDS)


def _through(proxy: PausableProxy, url: str) -> str:
    """`url` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    credentials, _, _ = parts.netloc.rpartition("@")
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{credentials}@{host}" if credentials else host))


@pytest.fixture
def database_proxy(database_url: str) -> Iterator[PausableProxy]:
    upstream = urlsplit(database_url)
    assert upstream.hostname is not None
    proxy = PausableProxy(upstream.hostname, upstream.port or 5432).start()
    yield proxy
    proxy.close()


async def test_a_stuck_consumer_loop_is_restarted(
    database_url: str, aws: AwsResources, aws_proxy: PausableProxy, tmp_path: Path
) -> None:
    probe = _liveness_probe()
    assert probe["grpc"]["service"] == "liveness"
    pipeline = Pipeline(database_url, aws, tmp_path)
    metrics_port = free_port()
    process = pipeline.processor(
        AWS_ENDPOINT_URL=aws_proxy.url,  # SQS answers through the proxy
        PROCESSOR_STALL_SECONDS=str(STALL_SECONDS),
        PROCESSOR_POLL_SECONDS=str(POLL_SECONDS),
        METRICS_PORT=str(metrics_port),
    )
    try:
        kubelet = Kubelet(process, probe)
        await kubelet.watch(2 * STALL_SECONDS)  # idle, its polls empty: alive all along
        assert kubelet.restarts == 0 and set(kubelet.seen) == {"SERVING"}, kubelet.seen

        aws_proxy.pause()  # the long poll in flight never returns (the client gives up at 30 s)
        await asyncio.sleep(STALL_SECONDS + 1)
        scrape = await asyncio.to_thread(prometheus.scrape, metrics_port)
        assert prometheus.value(scrape, "imagery_processor_consumer_state", state="stuck") == 1
        assert await _status(process.port, "") == "NOT_SERVING", "not ready either"
        await kubelet.watch(10)
        assert kubelet.restarts == 1, f"restarted once it stopped turning: {kubelet.seen}"
        assert kubelet.seen[-kubelet.threshold :] == ["NOT_SERVING"] * kubelet.threshold
        assert "consumer state changed" in process.log_path.read_text()
    finally:
        aws_proxy.resume()
        process.stop()


async def test_a_consumer_paused_for_an_outage_is_alive_and_not_ready(
    database_url: str, aws: AwsResources, database_proxy: PausableProxy, tmp_path: Path
) -> None:
    probe = _liveness_probe()
    pipeline = Pipeline(database_url, aws, tmp_path)  # the test's own calls go direct
    metrics_port = free_port()
    process = pipeline.processor(
        DATABASE_URL=_through(database_proxy, database_url),
        PROCESSOR_STALL_SECONDS=str(STALL_SECONDS),
        PROCESSOR_POLL_SECONDS=str(POLL_SECONDS),
        METRICS_PORT=str(metrics_port),
    )
    try:
        kubelet = Kubelet(process, probe)
        await kubelet.watch(2)
        assert kubelet.restarts == 0 and set(kubelet.seen) == {"SERVING"}, kubelet.seen

        database_proxy.close()  # Postgres refuses the processor from now on
        image_id = await pipeline.submit(images.png(), "image/png")
        ready_seen: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready_seen.append(await _status(process.port, ""))
            if ready_seen[-1] == "NOT_SERVING":
                break
            await asyncio.sleep(0.5)
        assert ready_seen[-1] == "NOT_SERVING", f"paused: not ready ({ready_seen})"

        await kubelet.watch(4 * STALL_SECONDS)  # longer than a stall, by far
        assert kubelet.restarts == 0, f"paused on purpose: never restarted ({kubelet.seen})"
        assert set(kubelet.seen) == {"SERVING"}
        scrape = await asyncio.to_thread(prometheus.scrape, metrics_port)
        assert prometheus.value(scrape, "imagery_processor_consumer_state", state="paused") == 1
        assert prometheus.value(scrape, "imagery_processor_consumer_state", state="stuck") == 0
        records = await pipeline.records([image_id])
        assert records[image_id]["status"] != "failed", "an outage fails no upload"
    finally:
        process.stop()
