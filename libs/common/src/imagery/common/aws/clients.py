"""aioboto3 clients, created once per process and reused: creating a session or a client is
far more expensive than a call through one."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import TYPE_CHECKING, Any, cast

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from imagery.common.config import AwsSettings
from imagery.common.errors import DependencyUnavailable
from imagery.common.telemetry import trace_aws_calls

if TYPE_CHECKING:
    from types_aiobotocore_cloudfront import CloudFrontClient
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


def _config(settings: AwsSettings, service: str) -> AioConfig:
    return AioConfig(
        region_name=settings.region,
        signature_version="s3v4" if service == "s3" else None,
        s3={"addressing_style": "path"} if settings.endpoint_url else None,
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=50,
    )


@contextlib.asynccontextmanager
async def s3_client(settings: AwsSettings) -> AsyncIterator[S3Client]:
    async with s3_client_and_credentials(settings) as (client, _):
        yield client


@contextlib.asynccontextmanager
async def s3_client_and_credentials(settings: AwsSettings) -> AsyncIterator[tuple[S3Client, Any]]:
    """The client plus the session's (self-refreshing) credentials, for fast presigning."""
    session = aioboto3.Session()
    async with session.client(
        "s3", endpoint_url=settings.endpoint_url, config=_config(settings, "s3")
    ) as client:
        trace_aws_calls(client)
        # aioboto3 forwards to aiobotocore's `async def get_credentials`; the stubs say sync.
        credentials = await cast(Awaitable[Any], session.get_credentials())
        yield client, credentials


@contextlib.asynccontextmanager
async def _client(settings: AwsSettings, service: str) -> AsyncIterator[Any]:
    session = aioboto3.Session()
    async with session.client(
        service,  # type: ignore[call-overload]  # the stubs overload on literal names
        endpoint_url=settings.endpoint_url,
        config=_config(settings, service),
    ) as client:
        trace_aws_calls(client)
        yield client


@contextlib.asynccontextmanager
async def sqs_client(settings: AwsSettings) -> AsyncIterator[SQSClient]:
    async with _client(settings, "sqs") as client:
        yield client


@contextlib.asynccontextmanager
async def sns_client(settings: AwsSettings) -> AsyncIterator[SNSClient]:
    async with _client(settings, "sns") as client:
        yield client


@contextlib.asynccontextmanager
async def cloudfront_client(settings: AwsSettings) -> AsyncIterator[CloudFrontClient]:
    """CloudFront's API (invalidations); global, served from us-east-1."""
    async with _client(settings, "cloudfront") as client:
        yield client


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_not_found(exc: ClientError) -> bool:
    return error_code(exc) in _NOT_FOUND_CODES


@contextlib.contextmanager
def aws_unavailable(what: str) -> Iterator[None]:
    """Translate transport and service failures into the domain's `DependencyUnavailable`."""
    try:
        yield
    except ClientError as exc:
        raise DependencyUnavailable(
            f"{what} failed ({error_code(exc) or 'error'}): retry shortly."
        ) from exc
    except (BotoCoreError, OSError) as exc:
        raise DependencyUnavailable(
            f"{what} failed ({type(exc).__name__}): retry shortly."
        ) from exc
