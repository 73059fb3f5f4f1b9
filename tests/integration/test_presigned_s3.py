"""Presigned uploads against SeaweedFS, an S3 that verifies signatures (moto, in
test_s3_sqs.py, verifies none): the upload that was declared is admitted and stored, and
every other one is refused by S3 itself, before anything is stored. Each case runs through
both of the adapter's signing paths (botocore's presigner, and the fast path)."""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import botocore.auth
import httpx
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from imagery.common.ids import new_image_id
from imagery.common.storage_keys import GLOBAL_SCOPE, upload_key
from imagery.upload.adapters.s3 import S3UploadUrls
from imagery.upload.ports import PresignedUpload
from tests.seaweedfs import SeaweedS3, running_seaweedfs

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

pytestmark = pytest.mark.integration

BODY = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
SHA256 = hashlib.sha256(BODY).hexdigest()
OTHER_BODY = BODY[:-1] + b"!"  # same length, another digest


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedS3]:
    with running_seaweedfs() as s3:
        yield s3


@pytest.fixture(scope="session")
async def s3(seaweedfs: SeaweedS3) -> AsyncIterator[tuple[S3Client, Any]]:
    """A client of SeaweedFS and its session's credentials (for the fast path)."""
    session = get_session()
    session.set_credentials(seaweedfs.access_key, seaweedfs.secret_key)
    config = AioConfig(
        region_name=seaweedfs.region, signature_version="s3v4", s3={"addressing_style": "path"}
    )
    async with session.create_client(
        "s3", endpoint_url=seaweedfs.endpoint_url, config=config
    ) as client:
        yield client, await session.get_credentials()


@pytest.fixture(params=["plain", "fast"])
def uploads(
    request: pytest.FixtureRequest, seaweedfs: SeaweedS3, s3: tuple[S3Client, Any]
) -> S3UploadUrls:
    client, credentials = s3
    fast = request.param == "fast"
    return S3UploadUrls(client, seaweedfs.bucket, credentials=credentials if fast else None)


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def new_key() -> str:
    return upload_key(GLOBAL_SCOPE, new_image_id())


def s3_error(resp: httpx.Response) -> tuple[int, str]:
    code = re.search(r"<Code>([^<]+)</Code>", resp.text)
    return resp.status_code, code.group(1) if code else ""


async def stored(s3: tuple[S3Client, Any], bucket: str, key: str) -> tuple[bytes, str] | None:
    client, _ = s3
    try:
        got = await client.get_object(Bucket=bucket, Key=key)
    except client.exceptions.NoSuchKey:
        return None
    return await got["Body"].read(), got["ContentType"]


def without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != name}


async def put(
    http: httpx.AsyncClient, presigned: PresignedUpload, body: Any, headers: dict[str, str]
) -> httpx.Response:
    return await http.put(presigned.url, content=body, headers=headers)


# PUT


@pytest.mark.parametrize(
    ("size_bytes", "sha256"),
    [(None, None), (len(BODY), None), (None, SHA256), (len(BODY), SHA256)],
    ids=["type", "type+size", "type+sha256", "type+size+sha256"],
)
async def test_the_declared_put_is_admitted_and_stores_the_bytes(
    uploads: S3UploadUrls,
    s3: tuple[S3Client, Any],
    http: httpx.AsyncClient,
    size_bytes: int | None,
    sha256: str | None,
) -> None:
    key = new_key()
    presigned = await uploads.presign_put(
        key, "image/png", 300, size_bytes=size_bytes, sha256=sha256
    )
    signed = parse_qs(urlsplit(presigned.url).query)["X-Amz-SignedHeaders"][0].split(";")
    assert signed == sorted(["host", *(name.lower() for name in presigned.headers)])
    resp = await put(http, presigned, BODY, presigned.headers)
    assert resp.status_code == 200, resp.text
    assert await stored(s3, uploads.bucket, key) == (BODY, "image/png")
    if sha256 is not None:
        client, _ = s3
        head = await client.head_object(Bucket=uploads.bucket, Key=key, ChecksumMode="ENABLED")
        assert head["ChecksumSHA256"] == presigned.headers["x-amz-checksum-sha256"]


async def test_another_content_type_is_refused(
    uploads: S3UploadUrls, s3: tuple[S3Client, Any], http: httpx.AsyncClient
) -> None:
    key = new_key()
    presigned = await uploads.presign_put(key, "image/png", 300)
    resp = await put(http, presigned, BODY, {"Content-Type": "image/jpeg"})
    assert s3_error(resp) == (403, "SignatureDoesNotMatch")
    assert await stored(s3, uploads.bucket, key) is None


# An HTTP client always sends the length of the body it sends, so a body longer or shorter
# than declared arrives with another Content-Length than the signed one.
@pytest.mark.parametrize("body", [BODY + b"more", BODY[:-1]], ids=["longer", "shorter"])
async def test_a_body_of_another_length_than_declared_is_refused(
    uploads: S3UploadUrls, s3: tuple[S3Client, Any], http: httpx.AsyncClient, body: bytes
) -> None:
    key = new_key()
    presigned = await uploads.presign_put(key, "image/png", 300, size_bytes=len(BODY))
    resp = await put(http, presigned, body, without(presigned.headers, "Content-Length"))
    assert s3_error(resp) == (403, "SignatureDoesNotMatch")
    assert await stored(s3, uploads.bucket, key) is None


async def test_a_body_of_unstated_length_is_refused_when_a_size_was_declared(
    uploads: S3UploadUrls, s3: tuple[S3Client, Any], http: httpx.AsyncClient
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield BODY

    key = new_key()
    presigned = await uploads.presign_put(key, "image/png", 300, size_bytes=len(BODY))
    resp = await put(http, presigned, chunks(), without(presigned.headers, "Content-Length"))
    assert resp.request.headers.get("Transfer-Encoding") == "chunked"
    assert s3_error(resp) == (403, "SignatureDoesNotMatch")
    assert await stored(s3, uploads.bucket, key) is None


async def test_a_body_that_does_not_match_the_checksum_is_refused(
    uploads: S3UploadUrls, s3: tuple[S3Client, Any], http: httpx.AsyncClient
) -> None:
    key = new_key()
    presigned = await uploads.presign_put(key, "image/png", 300, sha256=SHA256)
    resp = await put(http, presigned, OTHER_BODY, presigned.headers)
    assert s3_error(resp) == (400, "BadDigest")
    assert await stored(s3, uploads.bucket, key) is None


async def test_leaving_out_the_checksum_header_is_refused(
    uploads: S3UploadUrls, s3: tuple[S3Client, Any], http: httpx.AsyncClient
) -> None:
    key = new_key()
    presigned = await uploads.presign_put(key, "image/png", 300, sha256=SHA256)
    resp = await put(http, presigned, BODY, without(presigned.headers, "x-amz-checksum-sha256"))
    assert s3_error(resp) == (403, "SignatureDoesNotMatch")
    assert await stored(s3, uploads.bucket, key) is None


async def test_a_tampered_signature_is_refused(
    uploads: S3UploadUrls, s3: tuple[S3Client, Any], http: httpx.AsyncClient
) -> None:
    key = new_key()
    presigned = await uploads.presign_put(key, "image/png", 300, size_bytes=len(BODY))
    url = presigned.url
    flipped = "1" if url[-1] == "0" else "0"
    assert re.search(r"X-Amz-Signature=[0-9a-f]{64}$", url)
    tampered = PresignedUpload(url[:-1] + flipped, "PUT", presigned.headers, 300)
    resp = await put(http, tampered, BODY, presigned.headers)
    assert s3_error(resp) == (403, "SignatureDoesNotMatch")
    assert await stored(s3, uploads.bucket, key) is None


async def test_an_expired_url_is_refused(
    uploads: S3UploadUrls,
    s3: tuple[S3Client, Any],
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Signed 65 s ago for 60 s: expired 5 s ago, without waiting for it."""
    utc_now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    signed_at = utc_now - datetime.timedelta(seconds=65)
    key = new_key()
    with monkeypatch.context() as patch:
        patch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: signed_at)
        presigned = await uploads.presign_put(key, "image/png", 60, size_bytes=len(BODY))
    resp = await put(http, presigned, BODY, presigned.headers)
    assert s3_error(resp) == (403, "AccessDenied")
    assert "expired" in resp.text
    assert await stored(s3, uploads.bucket, key) is None


# POST


async def post(
    http: httpx.AsyncClient,
    presigned: PresignedUpload,
    body: bytes,
    overrides: dict[str, str] | None = None,
) -> httpx.Response:
    form = {**presigned.fields, **(overrides or {})}
    files = {"file": ("upload.png", body, form["Content-Type"])}
    return await http.post(presigned.url, data=form, files=files)


async def test_the_declared_form_post_is_admitted_and_stores_the_bytes(
    uploads: S3UploadUrls, s3: tuple[S3Client, Any], http: httpx.AsyncClient
) -> None:
    key = new_key()
    presigned = await uploads.presign_post(key, "image/png", 300, max_size_bytes=len(BODY))
    assert (presigned.method, presigned.headers) == ("POST", {})
    resp = await post(http, presigned, BODY)
    assert resp.status_code == 204, resp.text
    assert await stored(s3, uploads.bucket, key) == (BODY, "image/png")


@pytest.mark.parametrize(
    ("body", "fields", "refusal"),
    [
        (BODY + b"!", {}, (400, "EntityTooLarge")),
        (b"", {}, (400, "EntityTooSmall")),
        (BODY, {"Content-Type": "image/jpeg"}, (403, "AccessDenied")),
        (BODY, {"key": "uploads/elsewhere"}, (403, "AccessDenied")),
        (BODY, {"x-amz-signature": "0" * 64}, (403, "SignatureDoesNotMatch")),
    ],
    ids=["over-max-size", "empty", "another-content-type", "another-key", "tampered-signature"],
)
async def test_a_form_post_outside_its_policy_is_refused(
    uploads: S3UploadUrls,
    s3: tuple[S3Client, Any],
    http: httpx.AsyncClient,
    body: bytes,
    fields: dict[str, str],
    refusal: tuple[int, str],
) -> None:
    key = new_key()
    presigned = await uploads.presign_post(key, "image/png", 300, max_size_bytes=len(BODY))
    resp = await post(http, presigned, body, fields)
    assert s3_error(resp) == refusal
    for written in (key, fields.get("key", key)):
        assert await stored(s3, uploads.bucket, written) is None
