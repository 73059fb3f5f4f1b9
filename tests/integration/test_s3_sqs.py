from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, unquote_plus, urlsplit

import httpx
import pytest

from imagery.common.aws.clients import s3_client, sqs_client
from imagery.common.config import AwsSettings
from imagery.common.ids import new_image_id
from imagery.common.storage_keys import GLOBAL_SCOPE, upload_key
from imagery.devstack.aws import AwsResources
from imagery.processor.adapters.s3 import S3ObjectStore
from imagery.processor.adapters.sqs import SqsMessageQueue
from imagery.processor.ports import ObjectTooLarge
from imagery.upload.adapters.s3 import S3UploadUrls

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(aws_settings: AwsSettings) -> AsyncIterator[S3ObjectStore]:
    async with s3_client(aws_settings) as client:
        yield S3ObjectStore(client, aws_settings.bucket)


@pytest.fixture
async def uploads(aws_settings: AwsSettings) -> AsyncIterator[S3UploadUrls]:
    async with s3_client(aws_settings) as client:
        yield S3UploadUrls(client, aws_settings.bucket)


@pytest.fixture
async def queue(aws_settings: AwsSettings, aws: AwsResources) -> AsyncIterator[SqsMessageQueue]:
    async with sqs_client(aws_settings) as client:
        yield SqsMessageQueue(client, aws.queue_url)


async def test_presigned_put_signs_the_content_type(uploads: S3UploadUrls) -> None:
    key = upload_key(GLOBAL_SCOPE, new_image_id())
    presigned = await uploads.presign_put(key, "image/png", 300)
    query = parse_qs(urlsplit(presigned.url).query)
    assert "content-type" in query["X-Amz-SignedHeaders"][0].split(";")
    assert query["X-Amz-Expires"] == ["300"]
    assert urlsplit(presigned.url).path.endswith(f"/{key}")
    assert presigned.headers == {"Content-Type": "image/png"}
    other = await uploads.presign_put(key, "image/jpeg", 300)
    assert parse_qs(urlsplit(other.url).query)["X-Amz-Signature"] != query["X-Amz-Signature"]


_BODY = b"\x89PNG\r\n\x1a\n" + b"0" * 100
_BODY_SHA256 = hashlib.sha256(_BODY).hexdigest()
_BODY_CHECKSUM = base64.b64encode(hashlib.sha256(_BODY).digest()).decode()
# (size_bytes, sha256) -> the headers the client must send besides Content-Type
_DECLARATIONS = [
    ((None, None), {}),
    ((len(_BODY), None), {"Content-Length": str(len(_BODY))}),
    ((None, _BODY_SHA256), {"x-amz-checksum-sha256": _BODY_CHECKSUM}),
    (
        (len(_BODY), _BODY_SHA256),
        {"Content-Length": str(len(_BODY)), "x-amz-checksum-sha256": _BODY_CHECKSUM},
    ),
]


@pytest.mark.parametrize("fast", [False, True], ids=["plain", "fast"])
@pytest.mark.parametrize(("declared", "extra_headers"), _DECLARATIONS)
async def test_presigned_put_signs_every_header_it_asks_for(
    aws_settings: AwsSettings,
    fast: bool,
    declared: tuple[int | None, str | None],
    extra_headers: dict[str, str],
) -> None:
    from imagery.common.aws.clients import s3_client_and_credentials

    size_bytes, sha256 = declared
    key = upload_key(GLOBAL_SCOPE, new_image_id())
    async with s3_client_and_credentials(aws_settings) as (client, credentials):
        uploads = S3UploadUrls(
            client, aws_settings.bucket, credentials=credentials if fast else None
        )
        presigned = await uploads.presign_put(
            key, "image/png", 300, size_bytes=size_bytes, sha256=sha256
        )
        assert presigned.headers == {"Content-Type": "image/png", **extra_headers}
        assert (presigned.method, presigned.fields) == ("PUT", {})
        signed = parse_qs(urlsplit(presigned.url).query)["X-Amz-SignedHeaders"][0].split(";")
        assert signed == sorted(["host", *(name.lower() for name in presigned.headers)])
        async with httpx.AsyncClient() as http:
            resp = await http.put(presigned.url, content=_BODY, headers=presigned.headers)
        assert resp.status_code == 200
        got = await client.get_object(Bucket=aws_settings.bucket, Key=key)
        assert await got["Body"].read() == _BODY


async def test_a_checksum_that_is_not_sha256_hex_is_a_value_error(uploads: S3UploadUrls) -> None:
    key = upload_key(GLOBAL_SCOPE, new_image_id())
    for bad in (_BODY_CHECKSUM, _BODY_SHA256.upper(), _BODY_SHA256[:-2]):
        with pytest.raises(ValueError, match="sha256"):
            await uploads.presign_put(key, "image/png", 300, sha256=bad)


async def test_presigned_post_policy_fixes_key_type_and_size(
    uploads: S3UploadUrls, store: S3ObjectStore
) -> None:
    key = upload_key(GLOBAL_SCOPE, new_image_id())
    presigned = await uploads.presign_post(key, "image/png", 300, max_size_bytes=1000)
    assert (presigned.method, presigned.headers, presigned.expires_in_seconds) == ("POST", {}, 300)
    assert urlsplit(presigned.url).path.endswith(f"/{uploads.bucket}")
    assert (presigned.fields["key"], presigned.fields["Content-Type"]) == (key, "image/png")
    policy = json.loads(base64.b64decode(presigned.fields["policy"]))
    assert {"Content-Type": "image/png"} in policy["conditions"]
    assert {"key": key} in policy["conditions"]
    assert {"bucket": uploads.bucket} in policy["conditions"]
    assert ["content-length-range", 1, 1000] in policy["conditions"]
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            presigned.url, data=presigned.fields, files={"file": ("a.png", _BODY, "image/png")}
        )
    assert resp.status_code == 204
    info = await store.head(key)
    assert info is not None
    assert (info.size, info.content_type) == (len(_BODY), "image/png")


async def test_a_put_with_the_declared_type_succeeds(
    uploads: S3UploadUrls, store: S3ObjectStore
) -> None:
    key = upload_key(GLOBAL_SCOPE, new_image_id())
    presigned = await uploads.presign_put(key, "image/png", 300)
    async with httpx.AsyncClient() as http:
        resp = await http.put(
            presigned.url, content=b"\x89PNG\r\n\x1a\n" + b"0" * 100, headers=presigned.headers
        )
    assert resp.status_code == 200
    info = await store.head(key)
    assert info is not None
    assert (info.size, info.content_type) == (108, "image/png")


async def test_head_of_a_missing_object_is_none(store: S3ObjectStore) -> None:
    assert await store.head("uploads/nothing-here") is None


async def test_put_get_delete_round_trip_with_cache_control(store: S3ObjectStore) -> None:
    key = "variants/abc/small.webp"
    await store.put(
        key,
        b"RIFF....WEBP",
        content_type="image/webp",
        cache_control="public, max-age=31536000, immutable",
    )
    info = await store.head(key)
    assert info is not None and info.content_type == "image/webp"
    assert await store.get(key, max_bytes=100) == b"RIFF....WEBP"
    await store.delete(key)
    assert await store.head(key) is None
    await store.delete(key)  # deleting twice is harmless


async def test_get_never_reads_past_the_limit(store: S3ObjectStore) -> None:
    key = upload_key(GLOBAL_SCOPE, new_image_id())
    await store.put(key, b"x" * 1000, content_type="image/png")
    assert await store.get(key, max_bytes=1000) == b"x" * 1000
    with pytest.raises(ObjectTooLarge) as too_large:
        await store.get(key, max_bytes=999)
    assert too_large.value.size == 1000, "the object's real size, from the ranged answer"


async def test_a_copy_reports_the_sha256_the_store_computed(store: S3ObjectStore) -> None:
    source = upload_key(GLOBAL_SCOPE, new_image_id())
    await store.put(source, b"verified bytes", content_type="image/png")
    checksum = await store.copy(source, "originals/abc", content_type="image/png")
    assert checksum == base64.b64encode(hashlib.sha256(b"verified bytes").digest()).decode()
    info = await store.head("originals/abc")
    assert info is not None and info.content_type == "image/png"
    assert await store.copy("uploads/gone", "originals/def", content_type="image/png") is None


async def test_get_tells_missing_from_empty_in_one_request(store: S3ObjectStore) -> None:
    assert await store.get("uploads/nothing-here", max_bytes=100) is None
    key = upload_key(GLOBAL_SCOPE, new_image_id())
    await store.put(key, b"", content_type="image/png")
    assert await store.get(key, max_bytes=100) == b"", "S3 answers a range of nothing with 416"


async def test_uploads_raise_an_event_on_the_queue(
    store: S3ObjectStore, queue: SqsMessageQueue
) -> None:
    key = upload_key(GLOBAL_SCOPE, new_image_id())
    await store.put(key, b"bytes", content_type="image/png")
    await store.put("variants/not-notified/small.webp", b"bytes", content_type="image/webp")
    keys: list[str] = []
    for _ in range(5):
        messages = await queue.receive(wait_seconds=1)
        for message in messages:
            body = json.loads(message.body)
            keys += [unquote_plus(r["s3"]["object"]["key"]) for r in body.get("Records", [])]
        assert await queue.delete(messages) == []
        if key in keys:
            break
    assert keys == [key], "only uploads/ raises events"


async def test_batch_delete_reports_failed_entries(
    queue: SqsMessageQueue, aws_settings: AwsSettings, aws: AwsResources
) -> None:
    async with sqs_client(aws_settings) as client:
        for i in range(12):
            await client.send_message(QueueUrl=aws.queue_url, MessageBody=f"m{i}")
    received = []
    for _ in range(10):
        received += await queue.receive(wait_seconds=1)
        if len(received) >= 12:
            break
    received = [m for m in received if m.body.startswith("m")]
    assert len(received) == 12
    assert await queue.delete(received) == []
    bogus = received[0].__class__(
        message_id="x", receipt_handle="not-a-receipt", body="", receive_count=1
    )
    assert await queue.delete([bogus]) == [bogus]


async def test_changing_visibility_to_zero_makes_a_message_come_back(
    queue: SqsMessageQueue, aws_settings: AwsSettings, aws: AwsResources
) -> None:
    async with sqs_client(aws_settings) as client:
        await client.send_message(QueueUrl=aws.queue_url, MessageBody="again")
    first = [m for m in await queue.receive(wait_seconds=1) if m.body == "again"]
    assert len(first) == 1 and first[0].receive_count == 1
    await queue.change_visibility(first[0], 0)
    second = [m for m in await queue.receive(wait_seconds=1) if m.body == "again"]
    assert len(second) == 1 and second[0].receive_count == 2


@pytest.mark.parametrize("endpoint", ["local", "aws"])
async def test_fast_presign_is_byte_identical_to_botocores(
    aws_settings: AwsSettings, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime

    import botocore.auth

    from imagery.common.aws.clients import s3_client_and_credentials

    settings = (
        aws_settings if endpoint == "local" else AwsSettings("eu-west-1", None, "some-bucket")
    )
    fixed = datetime.datetime(2026, 11, 23, 12, 0, 0)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: fixed)
    async with s3_client_and_credentials(settings) as (client, credentials):
        plain = S3UploadUrls(client, settings.bucket)
        fast = S3UploadUrls(client, settings.bucket, credentials=credentials)
        for key in (
            upload_key(GLOBAL_SCOPE, new_image_id()),
            upload_key(GLOBAL_SCOPE, new_image_id()),
            "uploads/needs quoting+ü",
        ):
            for content_type in ("image/png", "image/avif"):
                expected = await plain.presign_put(key, content_type, 300)
                assert (await fast.presign_put(key, content_type, 300)).url == expected.url
            for (size_bytes, sha256), _ in _DECLARATIONS:
                params: dict[str, object] = {"ContentType": "image/png"}
                if size_bytes is not None:
                    params["ContentLength"] = size_bytes
                if sha256 is not None:
                    params["ChecksumSHA256"] = _BODY_CHECKSUM
                botocores = await client.generate_presigned_url(
                    "put_object",
                    Params={"Bucket": settings.bucket, "Key": key, **params},
                    ExpiresIn=300,
                    HttpMethod="PUT",
                )
                for uploads in (plain, fast):
                    presigned = await uploads.presign_put(
                        key, "image/png", 300, size_bytes=size_bytes, sha256=sha256
                    )
                    assert presigned.url == botocores
