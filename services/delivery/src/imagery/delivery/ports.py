"""What the delivery use cases need from the outside world."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from imagery.common.domain import DownloadTarget, ImageRecord
from imagery.common.listing import Filter, PagePosition


class RecordFinder(Protocol):
    async def find_many(self, project_id: str, image_ids: Sequence[str]) -> list[ImageRecord]:
        """The project's records among `image_ids`, in any order."""


class ImageReader(RecordFinder, Protocol):
    """Reads of one project's images; another project's ids are never found."""

    async def find_by_id(self, project_id: str, image_id: str) -> ImageRecord | None: ...

    async def find_download_targets(
        self, project_id: str, image_ids: Sequence[str], preset: str, formats: Sequence[str]
    ) -> list[DownloadTarget]: ...


class ImageLister(Protocol):
    """Pages of one project's images."""

    async def list_page(
        self, project_id: str, match: Filter | None, after: PagePosition | None, size: int
    ) -> list[ImageRecord]:
        """Up to `size` records that `match`, newest first (then by id), after `after`."""


class ImageStates(Protocol):
    """What WatchImage reads: the current records of watched images, many at once."""

    async def read_states(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], ImageRecord]:
        """The records named by `keys` (project id, image id), keyed the same way; an image
        that is gone, another project's, or in a deleted project is absent."""


class RenderRequests(Protocol):
    """Where delivery asks the processor for a variant not rendered yet."""

    async def request(
        self, project_id: str, image_ids: Sequence[str], version: int, preset: str
    ) -> None:
        """Ask for `preset` of profile `version` for the project's READY images among
        `image_ids`; asking again for one already asked is a no-op."""


@dataclass(frozen=True, slots=True)
class SignedUrls:
    urls: list[str]  # one per key, in order
    expire_time: datetime  # shared: all keys of one call fall in one expiry bucket


class UrlSigner(Protocol):
    async def sign_many(
        self, object_keys: Sequence[str], expiry_seconds: int | None = None
    ) -> SignedUrls:
        """One signed URL per key, in order, living at least `expiry_seconds` (the signer's
        default when None); a key signed again within the same expiry bucket gets the
        identical URL."""
