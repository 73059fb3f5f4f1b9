"""S3ObjectStore: the processor's view of the bucket, through a client created once and reused."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from imagery.common.aws.clients import aws_unavailable, error_code, is_not_found
from imagery.common.errors import DependencyUnavailable
from imagery.processor.ports import ListedObject, ObjectInfo, ObjectTooLarge

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import ObjectIdentifierTypeDef


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

    async def delete_every_version(self, prefix: str) -> int:
        """A takedown's delete: every version and delete marker under `prefix` (an object of
        a bucket without versioning is its one "null" version), a page at a time."""
        deleted = 0
        previous: list[ObjectIdentifierTypeDef] = []
        while True:
            with aws_unavailable("S3 ListObjectVersions"):
                resp = await self._client.list_object_versions(
                    Bucket=self._bucket, Prefix=prefix, MaxKeys=1000
                )
            doomed: list[ObjectIdentifierTypeDef] = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in (*resp.get("Versions", []), *resp.get("DeleteMarkers", []))
                if "Key" in v and "VersionId" in v
            ]
            if not doomed:
                return deleted
            if doomed == previous:
                raise DependencyUnavailable(
                    f"S3 kept the versions under {prefix} it said it deleted: retry shortly."
                )
            previous = doomed
            with aws_unavailable("S3 DeleteObjects"):
                answer = await self._client.delete_objects(
                    Bucket=self._bucket, Delete={"Objects": doomed, "Quiet": True}
                )
            errors = answer.get("Errors", [])
            if errors:
                first = errors[0]
                raise DependencyUnavailable(
                    f"S3 DeleteObjects refused {len(errors)} version(s) under {prefix} "
                    f"({first.get('Code', 'error')}: {first.get('Message', '')}): retry shortly."
                )
            deleted += len(doomed)

    async def versioning(self) -> str:
        """The bucket's versioning status: "Enabled", "Suspended", "off", or "unknown" when
        the role may not read it (no `s3:GetBucketVersioning`): the reconciler then restores
        nothing, and says why."""
        with aws_unavailable("S3 GetBucketVersioning"):
            try:
                resp = await self._client.get_bucket_versioning(Bucket=self._bucket)
            except ClientError as exc:
                if error_code(exc) in ("AccessDenied", "NotImplemented"):
                    return "unknown"
                raise
        return str(resp.get("Status") or "off")

    async def latest_noncurrent(self, key: str) -> str | None:
        """Versions come newest first, a key's before any longer key of the prefix; delete
        markers are listed apart, so the first version of `key` is its newest bytes."""
        marker: tuple[str, str] | None = None
        while True:
            with aws_unavailable("S3 ListObjectVersions"):
                if marker is None:
                    resp = await self._client.list_object_versions(
                        Bucket=self._bucket, Prefix=key, MaxKeys=100
                    )
                else:
                    resp = await self._client.list_object_versions(
                        Bucket=self._bucket,
                        Prefix=key,
                        MaxKeys=100,
                        KeyMarker=marker[0],
                        VersionIdMarker=marker[1],
                    )
            for version in resp.get("Versions", []):
                if version.get("Key") != key:
                    return None  # past the key: nothing of it is kept
                return None if version.get("IsLatest") else version.get("VersionId")
            if not resp.get("IsTruncated"):
                return None
            marker = (resp.get("NextKeyMarker", ""), resp.get("NextVersionIdMarker", ""))

    async def restore_version(self, key: str, version_id: str) -> bool:
        """A copy of the version as the current object (its content type and metadata kept):
        no `s3:DeleteObjectVersion` is needed, and the delete marker stays in the history."""
        with aws_unavailable("S3 CopyObject"):
            try:
                await self._client.copy_object(
                    Bucket=self._bucket,
                    Key=key,
                    CopySource={"Bucket": self._bucket, "Key": key, "VersionId": version_id},
                    MetadataDirective="COPY",
                )
            except ClientError as exc:
                if is_not_found(exc) or error_code(exc) == "NoSuchVersion":
                    return False
                raise
        return True


def _total_size(content_range: str | None, fallback: int) -> int:
    """`bytes 0-99/1234` -> 1234."""
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        if total.isdigit():
            return int(total)
    return fallback
