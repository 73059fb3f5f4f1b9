"""S3ObjectStore: the one bucket's objects, through a client created once and reused."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from imagery.common.aws.clients import aws_unavailable, is_not_found
from imagery.common.errors import ImageryError
from imagery.common.ports import ObjectInfo, PresignedUpload

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


class ObjectTooLarge(ImageryError):
    reason = "TOO_LARGE"


class S3ObjectStore:
    def __init__(self, client: S3Client, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    @property
    def bucket(self) -> str:
        return self._bucket

    async def presign_put(
        self, key: str, content_type: str, expires_in_seconds: int
    ) -> PresignedUpload:
        """A SigV4 query-signed PUT; ContentType is a signed header, so a PUT with any other
        Content-Type is refused by S3 (`X-Amz-SignedHeaders` includes `content-type`)."""
        url = await self._client.generate_presigned_url(
            "put_object",
            Params={"Bucket": self._bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=expires_in_seconds,
            HttpMethod="PUT",
        )
        return PresignedUpload(
            url=url,
            method="PUT",
            headers={"Content-Type": content_type},
            expires_in_seconds=expires_in_seconds,
        )

    async def head(self, key: str) -> ObjectInfo | None:
        with aws_unavailable("S3 HeadObject"):
            try:
                resp = await self._client.head_object(Bucket=self._bucket, Key=key)
            except ClientError as exc:
                if is_not_found(exc):
                    return None
                raise
        return ObjectInfo(
            key=key,
            size=int(resp["ContentLength"]),
            content_type=resp.get("ContentType"),
            etag=resp.get("ETag"),
        )

    async def get(self, key: str, *, max_bytes: int) -> bytes:
        """Read at most `max_bytes` (a ranged GET, so an object that grew is never
        downloaded whole); raise ObjectTooLarge when there is more."""
        with aws_unavailable("S3 GetObject"):
            resp = await self._client.get_object(
                Bucket=self._bucket, Key=key, Range=f"bytes=0-{max_bytes}"
            )
            async with resp["Body"] as stream:
                body = await stream.read()
        total = _total_size(resp.get("ContentRange"), len(body))
        if len(body) > max_bytes or total > max_bytes:
            raise ObjectTooLarge(f"Object {key} is larger than {max_bytes} bytes.")
        return body

    async def put(
        self, key: str, body: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        with aws_unavailable("S3 PutObject"):
            if cache_control is None:
                await self._client.put_object(
                    Bucket=self._bucket, Key=key, Body=body, ContentType=content_type
                )
            else:
                await self._client.put_object(
                    Bucket=self._bucket,
                    Key=key,
                    Body=body,
                    ContentType=content_type,
                    CacheControl=cache_control,
                )

    async def delete(self, key: str) -> None:
        with aws_unavailable("S3 DeleteObject"):
            await self._client.delete_object(Bucket=self._bucket, Key=key)


def _total_size(content_range: str | None, fallback: int) -> int:
    """`bytes 0-99/1234` -> 1234."""
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        if total.isdigit():
            return int(total)
    return fallback
