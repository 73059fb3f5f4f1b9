"""`/metrics` of each real process, as Prometheus scrapes it: the names, units and buckets
the shipped alerts and dashboard rely on, bounded labels, and the gauges every processor
could report exported by one of them only."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from imagery.common.metrics import PROCESSING_SECONDS, QUEUE_AGE_SECONDS, RPC_SECONDS
from imagery.devstack.aws import AwsResources
from imagery.devstack.fixtures import seed_ready_images
from imagery.devstack.pipeline import Pipeline, service_env
from imagery.devstack.procs import free_port
from imagery.devstack.services import ServiceProcess
from imagery.v1 import delivery_service_pb2 as dpb
from imagery.v1 import delivery_service_pb2_grpc as dpb_grpc
from imagery.v1 import upload_service_pb2 as upb
from imagery.v1 import upload_service_pb2_grpc as upb_grpc
from tests import grpc_auth, images, prometheus
from tests.deploy.monitoring import referenced_metrics
from tests.prometheus import ULID, Scrape, buckets, value

pytestmark = pytest.mark.e2e


@pytest.fixture
def metrics_ports() -> dict[str, int]:
    return {name: free_port() for name in ("upload", "delivery", "processor-1", "processor-2")}


@pytest.fixture
def services(
    database_url: str,
    aws: AwsResources,
    cdn_env: dict[str, str],
    metrics_ports: dict[str, int],
    tmp_path: Path,
) -> Iterator[dict[str, ServiceProcess]]:
    env = service_env(database_url, aws)
    pipeline = Pipeline(database_url, aws, tmp_path)
    started: dict[str, ServiceProcess] = {}
    try:
        for name, module, extra in (
            ("upload", "imagery.upload", {}),
            ("delivery", "imagery.delivery", cdn_env),
        ):
            process = ServiceProcess(
                name,
                module,
                free_port(),
                tmp_path / f"{name}.log",
                {**env, **extra, "METRICS_PORT": str(metrics_ports[name])},
                echo=None,
            )
            started[name] = process.start_ready(timeout=60)
        for name in ("processor-1", "processor-2"):
            started[name] = pipeline.processor(METRICS_PORT=str(metrics_ports[name]))
        yield started
    finally:
        for process in started.values():
            process.stop()


async def _traffic(
    services: dict[str, ServiceProcess], database_url: str, aws: AwsResources, api_key: str
) -> None:
    """One upload to READY through the real processors, a refused call, a signed URL."""
    async with grpc_auth.channel(f"127.0.0.1:{services['upload'].port}", api_key) as channel:
        uploads = upb_grpc.UploadServiceStub(channel)
        ticket = await uploads.CreateUploadUrl(
            upb.CreateUploadUrlRequest(content_type="image/png", file_name="pixel.png")
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await uploads.CreateUploadUrl(upb.CreateUploadUrlRequest(content_type="text/html"))
    body = images.png(64, 48)
    async with httpx.AsyncClient() as http:
        put = await http.put(ticket.upload_url, content=body, headers={"content-type": "image/png"})
        assert put.status_code == 200, put.text
    (seeded,) = await seed_ready_images(database_url, aws, 1)
    async with grpc_auth.channel(f"127.0.0.1:{services['delivery'].port}", api_key) as channel:
        await dpb_grpc.DeliveryServiceStub(channel).GetDownloadUrl(
            dpb.GetDownloadUrlRequest(image_id=seeded, variant="small")
        )
    pipeline = Pipeline(database_url, aws, Path("."))
    records = await pipeline.wait_terminal([ticket.image_id], within=60)
    assert records[ticket.image_id]["status"] == "ready"


async def _until(
    condition: Callable[[dict[str, Scrape]], bool], ports: dict[str, int], within: float
) -> dict[str, Scrape]:
    """Scrapes of every process, once `condition(scrapes)` holds (or the last ones)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        scrapes = {
            name: await asyncio.to_thread(prometheus.scrape, port) for name, port in ports.items()
        }
        if condition(scrapes) or asyncio.get_running_loop().time() > deadline:
            return scrapes
        await asyncio.sleep(0.5)


async def test_every_process_exports_the_conventional_names_units_andbuckets(
    services: dict[str, ServiceProcess],
    metrics_ports: dict[str, int],
    database_url: str,
    aws: AwsResources,
    api_key: str,
) -> None:
    await _traffic(services, database_url, aws, api_key)

    def settled(scrapes: dict[str, Scrape]) -> bool:
        processors = [scrapes["processor-1"], scrapes["processor-2"]]
        return any(
            "imagery_queue_messages" in s and "imagery_table_rows" in s for s in processors
        ) and any("imagery_processor_upload_to_ready_seconds_bucket" in s for s in processors)

    scrapes = await _until(settled, metrics_ports, within=30)
    upload, delivery = scrapes["upload"], scrapes["delivery"]
    processors = [scrapes["processor-1"], scrapes["processor-2"]]

    # RPCs: the current semantic convention, in seconds, with the recommended buckets.
    for scrape in (upload, delivery):
        assert "rpc_server_duration_bucket" not in scrape, "the deprecated name is gone"
    method = {"rpc_service": "imagery.v1.UploadService", "rpc_method": "CreateUploadUrl"}
    assert buckets(upload, "rpc_server_call_duration_seconds", **method) == list(RPC_SECONDS)
    assert (
        value(upload, "rpc_server_call_duration_seconds_count", rpc_grpc_status_code="0", **method)
        == 1
    )
    assert (
        value(upload, "rpc_server_call_duration_seconds_count", rpc_grpc_status_code="3", **method)
        == 1
    )
    assert (
        value(delivery, "rpc_server_call_duration_seconds_count", rpc_method="GetDownloadUrl") == 1
    )
    assert (value(delivery, "imagery_delivery_urls_signed_total") or 0) >= 1

    # Processing: seconds, with buckets for 0.05-60 s, by project.
    done = next(s for s in processors if "imagery_processor_upload_to_ready_seconds_bucket" in s)
    assert buckets(done, "imagery_processor_upload_to_ready_seconds", project="default") == list(
        PROCESSING_SECONDS
    )
    assert buckets(done, "imagery_processor_stage_duration_seconds", stage="verify") == list(
        PROCESSING_SECONDS
    )
    assert value(done, "imagery_processor_jobs_total", outcome="ready", project="default") == 1
    assert buckets(done, "imagery_processor_message_age_seconds") == list(QUEUE_AGE_SECONDS)

    # The database pool, by the semantic conventions, and whether Postgres answers.
    for name, scrape in (("upload", upload), ("delivery", delivery), ("processor", processors[0])):
        pool = {"db_client_connection_pool_name": name}
        assert (
            value(scrape, "db_client_connection_count", db_client_connection_state="idle", **pool)
            is not None
        )
        assert (
            value(scrape, "db_client_connection_count", db_client_connection_state="used", **pool)
            is not None
        )
        assert value(scrape, "db_client_connection_pending_requests", **pool) is not None
        assert value(scrape, "imagery_database_up", **pool) == 1

    # The consumer's state, per processor.
    for scrape in processors:
        assert value(scrape, "imagery_processor_consumer_state", state="running") == 1
        assert value(scrape, "imagery_processor_consumer_state", state="stuck") == 0

    # The queues' counts: exported by one processor, not once per replica.
    reporting = [s for s in processors if "imagery_queue_messages" in s]
    assert len(reporting) == 1, "exactly one processor holds the lease"
    queues = {
        (s.labels["queue"], s.labels["state"]) for s in reporting[0]["imagery_queue_messages"]
    }
    assert {("uploads", "visible"), ("dead_letter", "visible"), ("uploads", "in_flight")} <= queues
    others = [s for s in processors if s is not reporting[0]]
    tables = {s.labels["table"] for s in reporting[0].get("imagery_table_rows", [])}
    assert {"audit_events", "failed_images", "admin_jobs"} <= tables, "the tables' sizes too"
    assert not any("imagery_table_rows" in s for s in others)

    # What the shipped alerts and dashboard read, every process together exports.
    exported = {name.removesuffix("_bucket") for scrape in scrapes.values() for name in scrape} | {
        name for scrape in scrapes.values() for name in scrape
    }
    missing = referenced_metrics() - exported - set(EVENT_ONLY)
    assert not missing, f"read by the rules or dashboard, exported by no process: {missing}"

    # Bounded labels: no image ids, no object keys, no URLs anywhere.
    for name, scrape in scrapes.items():
        for samples in scrape.values():
            for sample in samples:
                for label, text in sample.labels.items():
                    assert not ULID.match(text), f"{name}: an image id in {sample.name}{{{label}}}"
                    assert "/" not in text or label == "rpc_service", (name, sample.name, label)


async def test_the_shared_gauges_move_to_another_processor_when_their_holder_stops(
    services: dict[str, ServiceProcess], metrics_ports: dict[str, int]
) -> None:
    ports = {name: metrics_ports[name] for name in ("processor-1", "processor-2")}
    scrapes = await _until(
        lambda s: any("imagery_queue_messages" in x for x in s.values()), ports, within=30
    )
    holder = next(name for name, s in scrapes.items() if "imagery_queue_messages" in s)
    other = next(name for name in ports if name != holder)
    services[holder].stop()
    taken = await _until(
        lambda s: "imagery_queue_messages" in s[other], {other: ports[other]}, within=40
    )
    assert "imagery_queue_messages" in taken[other], "the other processor took the lease over"


# Counted only when their event happens (a signing failure, an over-budget variant, a
# deferral, a render after ingest): absent from a scrape until then. Their instruments'
# OpenTelemetry names, which the source must declare.
EVENT_ONLY = {
    "imagery_delivery_signing_failures_total": "imagery.delivery.signing_failures",
    "imagery_processor_variants_over_budget_total": "imagery.processor.variants.over_budget",
    "imagery_processor_messages_deferred_total": "imagery.processor.messages.deferred",
    "imagery_processor_render_duration_seconds": "imagery.processor.render.duration",
    "imagery_retention_prune_failures_total": "imagery.retention.prune_failures",
}


def test_the_event_only_metrics_are_declared() -> None:
    source = "\n".join(
        p.read_text() for p in (Path(__file__).parents[2] / "services").rglob("*.py")
    )
    for name, instrument in EVENT_ONLY.items():
        assert f'"{instrument}"' in source, f"{name}: no instrument {instrument}"
