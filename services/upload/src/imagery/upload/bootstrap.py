"""Composition root: the only place UploadService builds infrastructure."""

from __future__ import annotations

from contextlib import AsyncExitStack

from imagery.common.aws.clients import s3_client_and_credentials
from imagery.common.config import Settings
from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.pool import create_pool
from imagery.common.grpc.server import GrpcServer
from imagery.upload.adapters.s3 import S3UploadUrls
from imagery.upload.grpc_api.servicer import UploadServiceServicer
from imagery.upload.use_cases import CreateUploadUrl, DeleteImage


async def build_server(settings: Settings, stack: AsyncExitStack) -> GrpcServer:
    """Open the pool and S3 client on `stack` (closed when it unwinds) and wire the servicer."""
    pool = await create_pool(settings.database_url)
    stack.push_async_callback(pool.close)
    s3, credentials = await stack.enter_async_context(s3_client_and_credentials(settings.aws))
    images = PostgresImageRepository(pool)
    uploads = S3UploadUrls(s3, settings.aws.bucket, credentials=credentials)
    servicer = UploadServiceServicer(
        CreateUploadUrl(
            images,
            uploads,
            expiry_seconds=settings.upload_url_expiry_seconds,
            max_upload_bytes=settings.max_upload_bytes,
        ),
        DeleteImage(images, uploads),
    )
    return GrpcServer([servicer.registration()])
