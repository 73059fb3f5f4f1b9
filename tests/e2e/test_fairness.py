"""Fair processing across projects, as the tenants see it: one project's burst of uploads
does not keep another project's upload waiting behind the whole burst. Real projects and
keys (ProjectService), real uploads (CreateUploadUrl and the presigned PUT), the queue with
its production redrive policy, and the real processor process."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import httpx
import pytest

from imagery.devstack.aws import MAX_RECEIVE_COUNT, AwsResources
from imagery.devstack.fixtures import AwsServer
from imagery.devstack.pipeline import Pipeline
from imagery.devstack.services import ServiceProcess
from imagery.v1 import project_pb2 as pb
from imagery.v1 import project_service_pb2 as ppb
from imagery.v1 import project_service_pb2_grpc as pgrpc
from imagery.v1 import upload_service_pb2 as upb
from imagery.v1 import upload_service_pb2_grpc as ugrpc
from tests import grpc_auth, images

pytestmark = pytest.mark.e2e

BURST = 50
# Two job slots and four uploads in flight, as each pod of deploy/k8s runs: a project's share
# is three uploads in flight by default (all but one).
PROCESSOR = {"PROCESSOR_JOB_SLOTS": "2", "PROCESSOR_CONCURRENCY": "4"}


@pytest.fixture
def aws(aws_server: AwsServer) -> AwsResources:
    """The queue as production has it: deferrals must never dead-letter a message."""
    return aws_server.new_resources(max_receive_count=MAX_RECEIVE_COUNT)


@pytest.fixture
def pipeline(database_url: str, aws: AwsResources, tmp_path: Path) -> Pipeline:
    return Pipeline(database_url, aws, tmp_path)


async def _project_key(target: str, admin_key: str, project_id: str) -> str:
    """A new project, and a key of it that may upload."""
    async with grpc_auth.channel(target, admin_key) as channel:
        projects = pgrpc.ProjectServiceStub(channel)
        await projects.CreateProject(
            ppb.CreateProjectRequest(
                project_id=project_id, project=pb.Project(display_name=project_id.title())
            )
        )
        created = await projects.CreateApiKey(
            ppb.CreateApiKeyRequest(
                parent=f"projects/{project_id}",
                api_key=pb.ApiKey(display_name="uploader", scopes=["images.create"]),
            )
        )
    key: str = created.key
    return key


async def _upload(target: str, key: str, files: list[bytes]) -> list[str]:
    """What a client does: CreateUploadUrl, then PUT the bytes; returns the image ids."""
    ids = []
    async with grpc_auth.channel(target, key) as channel, httpx.AsyncClient() as http:
        uploads = ugrpc.UploadServiceStub(channel)
        for n, body in enumerate(files):
            ticket = await uploads.CreateUploadUrl(
                upb.CreateUploadUrlRequest(content_type="image/jpeg", file_name=f"{n}.jpg")
            )
            put = await http.put(
                ticket.upload_url, content=body, headers=dict(ticket.required_headers)
            )
            assert put.status_code == 200, put.text
            ids.append(ticket.image_id)
    return ids


async def test_a_burst_of_one_project_does_not_hold_up_another_project_s_upload(
    upload_service: ServiceProcess, keys: dict[str, str], pipeline: Pipeline
) -> None:
    target = f"127.0.0.1:{upload_service.port}"
    burst_key = await _project_key(target, keys["IMAGERY_ADMIN_KEY"], "burst")
    quiet_key = await _project_key(target, keys["IMAGERY_ADMIN_KEY"], "quiet")
    # Distinct images of a size whose jobs take a while: no upload is deduplicated away.
    burst = await _upload(target, burst_key, [images.jpeg(800 + n, 600) for n in range(BURST)])
    (quiet,) = await _upload(target, quiet_key, [images.jpeg(600, 800)])

    # The whole burst waits in the queue ahead of the quiet project's upload.
    process = pipeline.processor(**PROCESSOR)
    try:
        records = await pipeline.wait_terminal([*burst, quiet], within=120)
        await pipeline.wait_queue_empty(within=30)
    finally:
        process.stop()

    assert {r["status"] for r in records.values()} == {"ready"}
    ready_at = sorted(records[i]["updated_at"] for i in burst)  # set by the READY commit
    ahead = sum(at < records[quiet]["updated_at"] for at in ready_at)
    print(f"\nthe quiet project's upload was READY after {ahead} of the burst's {BURST}")
    assert ahead < 10, f"READY after {ahead} of the burst's uploads, not before the tenth"

    assert {r["attempts"] for r in records.values()} == {1}, "a deferral spends no attempt"
    assert pipeline.queue_counts(pipeline.aws.dlq_url) == (0, 0), "nothing dead-lettered"
    lines = process.log_path.read_text().splitlines()
    log = [json.loads(line) for line in lines if line.startswith("{")]
    outcomes = [e for e in log if e.get("message") == "upload processed"]
    assert not [e for e in log if str(e.get("message", "")).startswith("message failed")]
    assert max(int(e["receive_count"]) for e in outcomes) > 1, "the burst was deferred"
    await pipeline.assert_invariants()
    await _assert_projects(pipeline.dsn, burst, quiet)


async def _assert_projects(dsn: str, burst: list[str], quiet: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT project_id, count(*) FROM image_records WHERE id = ANY($1::text[])"
            " GROUP BY project_id",
            [*burst, quiet],
        )
    finally:
        await conn.close()
    assert {r["project_id"]: r["count"] for r in rows} == {"burst": BURST, "quiet": 1}
