"""S3UploadUrls: presigned PUTs into the bucket's upload area, and their deletion."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest

from imagery.common.aws.clients import aws_unavailable
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
        self, key: str, content_type: str, expires_in_seconds: int
    ) -> PresignedUpload:
        """A SigV4 query-signed PUT; ContentType is a signed header, so a PUT with any other
        Content-Type is refused by S3 (`X-Amz-SignedHeaders` includes `content-type`)."""
        if self._credentials is None or not _PRESIGNABLE_KEY.fullmatch(key):
            url = await self._client_presign_put(key, content_type, expires_in_seconds)
        else:
            url = await self._fast_presign_put(key, content_type, expires_in_seconds)
        return PresignedUpload(
            url=url,
            method="PUT",
            headers={"Content-Type": content_type},
            expires_in_seconds=expires_in_seconds,
        )

    async def _client_presign_put(self, key: str, content_type: str, expires: int) -> str:
        return await self._client.generate_presigned_url(
            "put_object",
            Params={"Bucket": self._bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=expires,
            HttpMethod="PUT",
        )

    async def _fast_presign_put(self, key: str, content_type: str, expires: int) -> str:
        if self._url_prefix is None:
            probe = await self._client_presign_put(_PROBE_KEY, content_type, expires)
            self._url_prefix = probe.split("?", 1)[0].removesuffix(_PROBE_KEY)
        frozen = await self._credentials.get_frozen_credentials()
        request = AWSRequest(
            method="PUT", url=self._url_prefix + key, headers={"Content-Type": content_type}
        )
        S3SigV4QueryAuth(frozen, "s3", self._region, expires=expires).add_auth(request)
        return str(request.prepare().url)

    async def delete(self, key: str) -> None:
        with aws_unavailable("S3 DeleteObject"):
            await self._client.delete_object(Bucket=self._bucket, Key=key)
