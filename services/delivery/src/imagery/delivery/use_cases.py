"""Delivery use cases for images and listings (the URL ones are in `urls.py`): only ports and
domain types."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from imagery.common.domain import ImageRecord
from imagery.common.errors import (
    ImageNotFound,
    ImageryError,
    InvalidArgument,
    InvalidImageId,
    NoImageIds,
    TooManyImageIds,
)
from imagery.common.ids import is_image_id, require_image_id
from imagery.common.listing import PagePosition
from imagery.common.tenancy import Principal
from imagery.delivery.filtering import parse_filter
from imagery.delivery.ports import ImageLister, ImageReader, RecordFinder

MAX_IMAGES = 100  # BatchGetImages
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class ImagesResult:
    images: list[ImageRecord]
    not_found_image_ids: list[str]


@dataclass(frozen=True, slots=True)
class ImagePage:
    images: list[ImageRecord]
    next_page_token: str


class GetImage:
    def __init__(self, images: ImageReader) -> None:
        self._images = images

    async def __call__(self, caller: Principal, *, image_id: str) -> ImageRecord:
        record = await self._images.find_by_id(caller.project_id, require_image_id(image_id))
        if record is None:  # never created, deleted, or another project's: one answer
            raise ImageNotFound(image_id)
        return record


class BatchGetImages:
    def __init__(self, images: RecordFinder) -> None:
        self._images = images

    async def __call__(self, caller: Principal, *, image_ids: Sequence[str]) -> ImagesResult:
        ids = validate_batch(image_ids, MAX_IMAGES)
        by_id = {r.id: r for r in await self._images.find_many(caller.project_id, ids)}
        return ImagesResult(
            [by_id[i] for i in ids if i in by_id], [i for i in ids if i not in by_id]
        )


class ListImages:
    def __init__(self, images: ImageLister) -> None:
        self._images = images

    async def __call__(
        self, caller: Principal, *, page_size: int, page_token: str, filter: str
    ) -> ImagePage:
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(
                "page_size",
                f"is {page_size}",
                f"ask for 1 to {MAX_PAGE_SIZE} images (0 means {DEFAULT_PAGE_SIZE})",
            )
        size = page_size or DEFAULT_PAGE_SIZE
        match = parse_filter(filter)
        after = _read_token(page_token, filter) if page_token else None
        records = await self._images.list_page(caller.project_id, match, after, size + 1)
        if len(records) <= size:
            return ImagePage(records, "")
        last = records[size - 1]
        assert last.created_at is not None
        return ImagePage(
            records[:size], _write_token(PagePosition(last.created_at, last.id), filter)
        )


# A page token is the last image of the page (the keyset) and a digest of the filter it was
# made for: opaque to callers, and refused with another filter. It reveals nothing the caller
# could not read: its own image's id and creation time.
def _filter_digest(filter: str) -> str:
    return hashlib.sha256(filter.encode()).hexdigest()[:16]


def _write_token(position: PagePosition, filter: str) -> str:
    raw = json.dumps(
        {"t": position.created_at.isoformat(), "i": position.image_id, "f": _filter_digest(filter)},
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _read_token(token: str, filter: str) -> PagePosition:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position = PagePosition(datetime.fromisoformat(raw["t"]), require_image_id(raw["i"]))
        digest = raw["f"]
    except (ValueError, KeyError, TypeError, ImageryError):
        raise InvalidArgument(
            "page_token", "is not a token ListImages made", "send next_page_token as received"
        ) from None
    if digest != _filter_digest(filter):
        raise InvalidArgument(
            "page_token",
            "was made for another filter",
            "send the same filter as the call that returned it, or start without a token",
        )
    return position


def validate_batch(image_ids: Sequence[str], most: int) -> list[str]:
    if not image_ids:
        raise NoImageIds(most)
    ids = list(dict.fromkeys(image_ids))  # duplicates collapse; first appearance order kept
    if len(ids) > most:
        raise TooManyImageIds(len(ids), most)
    if all(map(is_image_id, ids)):  # the common case, without building a list
        return ids
    raise InvalidImageId(
        "image_ids", [i for i, value in enumerate(image_ids) if not is_image_id(value)]
    )
