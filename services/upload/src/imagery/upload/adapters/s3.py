"""S3UploadUrls: presigned PUTs and POSTs into the bucket's upload area, and their deletion."""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING, Any

from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest

from imagery.common.aws.clients import aws_unavailable
from imagery.common.ids import is_sha256
from imagery.common.storage_keys import GLOBAL_SCOPE, upload_key
from imagery.upload.ports import PresignedUpload

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


# Keys we presign need no URL quoting, so a resolved URL prefix + key is exactly the URL
# botocore would build (checked byte for byte in tests/integration/test_s3_sqs.py).
_PRESIGNABLE_KEY = re.compile(r"^[A-Za-z0-9/_.-]+$")
_PROBE_KEY = upload_key(GLOBAL_SCOPE, "0000000000imageryprobe")


class S3UploadUrls:
    """One bucket. Give it `credentials` (the session's, refreshable) to presign faster:
    botocore re-evaluates the S3 endpoint ruleset on every presign because the object key is
    a ruleset parameter (its cache then never hits), although no rule reads it. With
    credentials we resolve the URL prefix once through the client and sign each URL with
    botocore's own `S3SigV4QueryAuth`: the same URL, at a fraction of the cost."""

    def __init__(
        self, client: S3Client, bucket: str, *, credentials: Any = None, region: str | None = None
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._credentials = credentials
        self._region = region or client.meta.region_name
        self._url_prefix: str | None = None

    @property
    def bucket(self) -> str:
        return self._bucket

    async def presign_put(
        self,
        key: str,
        content_type: str,
        expires_in_seconds: int,
        *,
        size_bytes: int | None = None,
        sha256: str | None = None,
    ) -> PresignedUpload:
        """A SigV4 query-signed PUT. Every header in `headers` is a signed header
        (`X-Amz-SignedHeaders`), so S3 refuses a PUT whose Content-Type, Content-Length or
        `x-amz-checksum-sha256` differ, and refuses a body whose SHA-256 is not that checksum
        (`BadDigest`). S3 verifies `x-amz-checksum-sha256` on its own; the SDK's
        `x-amz-sdk-checksum-algorithm` adds nothing, so it is not asked of the client."""
        if size_bytes is not None and size_bytes < 0:
            raise ValueError(f"size_bytes must not be negative, got {size_bytes}")
        headers = {"Content-Type": content_type}
        if size_bytes is not None:
            headers["Content-Length"] = str(size_bytes)
        if sha256 is not None:
            headers["x-amz-checksum-sha256"] = _sha256_base64(sha256)
        if self._credentials is None or not _PRESIGNABLE_KEY.fullmatch(key):
            url = await self._client_presign_put(key, headers, expires_in_seconds)
        else:
            url = await self._fast_presign_put(key, headers, expires_in_seconds)
        return PresignedUpload(
            url=url, method="PUT", headers=headers, expires_in_seconds=expires_in_seconds
        )

    async def presign_post(
        self, key: str, content_type: str, expires_in_seconds: int, *, max_size_bytes: int
    ) -> PresignedUpload:
        """A browser form POST: its signed policy fixes the bucket, the key and the
        Content-Type, and S3 refuses a file outside [1, max_size_bytes] bytes."""
        post = await self._client.generate_presigned_post(
            Bucket=self._bucket,
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[
                {"Content-Type": content_type},
                ["content-length-range", 1, max_size_bytes],
            ],
            ExpiresIn=expires_in_seconds,
        )
        return PresignedUpload(
            url=post["url"],
            method="POST",
            headers={},
            expires_in_seconds=expires_in_seconds,
            fields={name: str(value) for name, value in post["fields"].items()},
        )

    async def _client_presign_put(self, key: str, headers: dict[str, str], expires: int) -> str:
        params: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": key,
            "ContentType": headers["Content-Type"],
        }
        if "Content-Length" in headers:
            params["ContentLength"] = int(headers["Content-Length"])
        if "x-amz-checksum-sha256" in headers:
            params["ChecksumSHA256"] = headers["x-amz-checksum-sha256"]
        return await self._client.generate_presigned_url(
            "put_object", Params=params, ExpiresIn=expires, HttpMethod="PUT"
        )

    async def _fast_presign_put(self, key: str, headers: dict[str, str], expires: int) -> str:
        if self._url_prefix is None:
            probe = await self._client_presign_put(
                _PROBE_KEY, {"Content-Type": headers["Content-Type"]}, expires
            )
            self._url_prefix = probe.split("?", 1)[0].removesuffix(_PROBE_KEY)
        frozen = await self._credentials.get_frozen_credentials()
        request = AWSRequest(method="PUT", url=self._url_prefix + key, headers=headers)
        S3SigV4QueryAuth(frozen, "s3", self._region, expires=expires).add_auth(request)
        return str(request.prepare().url)

    async def delete(self, key: str) -> None:
        with aws_unavailable("S3 DeleteObject"):
            await self._client.delete_object(Bucket=self._bucket, Key=key)


def _sha256_base64(hex_digest: str) -> str:
    """S3 takes the checksum as the base64 of the raw digest; we are given lower-case hex."""
    if not is_sha256(hex_digest):
        raise ValueError("sha256 must be 64 lower-case hex digits")
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")
