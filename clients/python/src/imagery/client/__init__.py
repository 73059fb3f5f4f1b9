"""imagery-client: upload images to imagery, wait until they are processed, and get signed
URLs for their variants, from synchronous (`ImageryClient`) or asyncio code
(`AsyncImageryClient`). Errors are typed exceptions (`imagery.client.errors`); an in-process
fake imagery for tests is `imagery.client.testing.FakeImageryServer`; the generated stubs are
`imagery.v1`."""

from imagery.client._version import __version__
from imagery.client.aio import AsyncImageryClient
from imagery.client.channels import DEFAULT_SERVICE_CONFIG, AioRequestId, SyncRequestId
from imagery.client.errors import (
    ImageBlocked,
    ImageFailed,
    ImageNotFound,
    ImageNotReady,
    ImageryError,
    InvalidArgument,
    NotFound,
    QuotaExceeded,
    RateLimited,
    ResourceExhausted,
    ServerBusy,
    Unauthenticated,
    Unavailable,
    UnknownVariant,
    UploadFailed,
)
from imagery.client.results import DownloadFailure, DownloadUrls, ImageBatch
from imagery.client.sync import ImageryClient
from imagery.v1.upload_service_pb2 import UploadLimits

__all__ = [
    "DEFAULT_SERVICE_CONFIG",
    "AioRequestId",
    "AsyncImageryClient",
    "DownloadFailure",
    "DownloadUrls",
    "ImageBatch",
    "ImageBlocked",
    "ImageFailed",
    "ImageNotFound",
    "ImageNotReady",
    "ImageryClient",
    "ImageryError",
    "InvalidArgument",
    "NotFound",
    "QuotaExceeded",
    "RateLimited",
    "ResourceExhausted",
    "ServerBusy",
    "SyncRequestId",
    "Unauthenticated",
    "Unavailable",
    "UnknownVariant",
    "UploadFailed",
    "UploadLimits",
    "__version__",
]
