"""S3ObjectStore: the processor's view of the bucket, through a client created once and reused."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from imagery.common.aws.clients import aws_unavailable, error_code, is_not_found
from imagery.processor.ports import ListedObject, ObjectInfo, ObjectTooLarge

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


class S3ObjectStore:
    def __init__(self, client: S3Client, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    @property
    def bucket(self) -> str:
        return self._bucket

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

    async def get(self, key: str, *, max_bytes: int) -> bytes | None:
        """The object's bytes: None when there is no such object, b"" when it is empty. Reads
        at most `max_bytes` (a ranged GET, so an object that grew is never downloaded whole)
        and raises ObjectTooLarge, with the object's size, when there is more. One request
        where HeadObject then GetObject took two."""
        with aws_unavailable("S3 GetObject"):
            try:
                resp = await self._client.get_object(
                    Bucket=self._bucket, Key=key, Range=f"bytes=0-{max_bytes}"
                )
            except ClientError as exc:
                if is_not_found(exc):
                    return None
                if error_code(exc) == "InvalidRange":  # S3's answer to a range of nothing
                    return b""
                raise
            async with resp["Body"] as stream:
                body: bytes = await stream.read()
        total = _total_size(resp.get("ContentRange"), len(body))
        if len(body) > max_bytes or total > max_bytes:
            raise ObjectTooLarge(key, size=max(total, len(body)))
        return body

    async def copy(self, source_key: str, key: str, *, content_type: str) -> str | None:
        """Server-side copy within the bucket. Returns the copy's SHA-256 as S3 computed it
        (base64), so the caller can check the bytes are the ones it meant; None when the
        source is gone."""
        with aws_unavailable("S3 CopyObject"):
            try:
                resp = await self._client.copy_object(
                    Bucket=self._bucket,
                    Key=key,
                    CopySource={"Bucket": self._bucket, "Key": source_key},
                    ContentType=content_type,
                    MetadataDirective="REPLACE",
                    ChecksumAlgorithm="SHA256",
                )
            except ClientError as exc:
                if is_not_found(exc):
                    return None
                raise
        checksum: str | None = resp.get("CopyObjectResult", {}).get("ChecksumSHA256")
        return checksum

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

    async def list_page(
        self, prefix: str, *, after: str | None, limit: int
    ) -> tuple[list[ListedObject], str | None]:
        with aws_unavailable("S3 ListObjectsV2"):
            if after is None:
                resp = await self._client.list_objects_v2(
                    Bucket=self._bucket, Prefix=prefix, MaxKeys=limit
                )
            else:
                resp = await self._client.list_objects_v2(
                    Bucket=self._bucket, Prefix=prefix, MaxKeys=limit, StartAfter=after
                )
        listed = [ListedObject(o["Key"], o["LastModified"]) for o in resp.get("Contents", [])]
        more = bool(resp.get("IsTruncated")) and bool(listed)
        return listed, (listed[-1].key if more else None)

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
