"""Composition root: the only place UploadService builds infrastructure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

from imagery.common.access import open_access
from imagery.common.aws.clients import s3_client_and_credentials
from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.pool import create_pool
from imagery.common.db.projects import PostgresProjects
from imagery.common.db.schema import wait_for_schema
from imagery.common.db.upload_requests import PostgresUploadRequests
from imagery.common.grpc.auth import Authenticates, Authenticator
from imagery.common.grpc.server import GrpcServer
from imagery.upload.adapters.s3 import S3UploadUrls
from imagery.upload.config import UploadSettings
from imagery.upload.grpc_api.projects import ProjectServiceServicer
from imagery.upload.grpc_api.servicer import UploadServiceServicer
from imagery.upload.projects import ProjectAdmin
from imagery.upload.use_cases import CreateUploadUrl, DeleteImage, UpdateImage


async def build_server(
    settings: UploadSettings,
    stack: AsyncExitStack,
    *,
    authenticates: Callable[[Authenticator], Awaitable[Authenticates]] | None = None,
) -> GrpcServer:
    """Open the pool, S3 client and change bus on `stack` (closed when it unwinds) and wire
    UploadService and ProjectService behind authentication. `authenticates` replaces the
    credential check with what it returns: benchmarks measure the check that way."""
    base = settings.base
    pool = await create_pool(
        base.database_url,
        acquire_timeout=base.database_acquire_timeout_ms / 1000,
        name="upload",
        probe=True,
    )
    stack.push_async_callback(pool.close)
    await wait_for_schema(pool, timeout_seconds=base.schema_wait_seconds)
    s3, credentials = await stack.enter_async_context(s3_client_and_credentials(base.aws))
    authenticator, _ = await open_access(base, pool, stack)
    images = PostgresImageRepository(pool)
    uploads = S3UploadUrls(s3, base.aws.bucket, credentials=credentials)
    policy = base.project_policy
    upload = UploadServiceServicer(
        CreateUploadUrl(
            images,
            uploads,
            requests=PostgresUploadRequests(pool),
            expiry_seconds=base.upload_url_expiry_seconds,
            policy=policy,
            max_image_pixels=settings.max_image_pixels,
            max_image_frames=settings.max_image_frames,
        ),
        DeleteImage(images, uploads),
        UpdateImage(images),
    )
    projects = ProjectServiceServicer(
        ProjectAdmin(
            PostgresProjects(pool),
            policy,
            retention_seconds=settings.project_retention_seconds,
            changed=authenticator.changed,
            presets=settings.presets,
        )
    )
    return GrpcServer.for_service(
        [upload.registration(), projects.registration()], base, authenticator
    )
