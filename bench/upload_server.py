"""UploadService plus the echo RPC, for `bench.upload` (run as its own process): the
production build, or with `UNAUTHENTICATED_AS_KEY` set the same wiring without the
credential check (`bench.unauthenticated`)."""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack

from bench.echo import add_echo
from bench.unauthenticated import UNAUTHENTICATED_AS_KEY, principal_of, running_as
from imagery.common.access import open_access
from imagery.common.aws.clients import s3_client_and_credentials
from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.pool import create_pool
from imagery.common.db.projects import PostgresProjects
from imagery.common.grpc.server import GrpcServer
from imagery.common.logs import configure_logging
from imagery.upload.adapters.s3 import S3UploadUrls
from imagery.upload.bootstrap import build_server
from imagery.upload.config import UploadSettings, load_settings
from imagery.upload.grpc_api.projects import ProjectServiceServicer
from imagery.upload.grpc_api.servicer import UploadServiceServicer
from imagery.upload.projects import ProjectAdmin
from imagery.upload.use_cases import CreateUploadUrl, DeleteImage
from imagery.v1 import project_service_pb2_grpc, upload_service_pb2_grpc


async def build_unauthenticated(
    settings: UploadSettings, stack: AsyncExitStack, key: str
) -> GrpcServer:
    """`imagery.upload.bootstrap.build_server` line for line (keep them in step), except that
    the server gets no authenticator and every RPC runs as `key`'s principal."""
    base = settings.base
    pool = await create_pool(base.database_url)
    stack.push_async_callback(pool.close)
    s3, credentials = await stack.enter_async_context(s3_client_and_credentials(base.aws))
    authenticator, _ = await open_access(base, pool, stack)
    principal = await principal_of(authenticator, key)
    images = PostgresImageRepository(pool)
    uploads = S3UploadUrls(s3, base.aws.bucket, credentials=credentials)
    policy = base.project_policy
    upload = UploadServiceServicer(
        CreateUploadUrl(
            images, uploads, expiry_seconds=base.upload_url_expiry_seconds, policy=policy
        ),
        DeleteImage(images, uploads),
    )
    projects = ProjectServiceServicer(
        ProjectAdmin(
            PostgresProjects(pool),
            policy,
            retention_seconds=settings.project_retention_seconds,
        )
    )
    return GrpcServer(
        [
            running_as(
                principal, upload, upload_service_pb2_grpc.add_UploadServiceServicer_to_server
            ),
            running_as(
                principal, projects, project_service_pb2_grpc.add_ProjectServiceServicer_to_server
            ),
        ],
        authenticator=None,
        reflection_enabled=base.grpc_reflection,
        tls=base,
    )


async def main() -> None:
    settings = load_settings()
    configure_logging("upload", settings.base.log_level, settings.base.log_format)
    key = os.environ.get(UNAUTHENTICATED_AS_KEY)
    async with AsyncExitStack() as stack:
        if key:
            server = await build_unauthenticated(settings, stack, key)
        else:
            server = await build_server(settings, stack)
        add_echo(server)
        await server.start(settings.base.grpc_port, host="127.0.0.1")
        await server.serve_until_signal()


if __name__ == "__main__":
    asyncio.run(main())
