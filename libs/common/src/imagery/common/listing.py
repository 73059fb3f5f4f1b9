"""What ListImages asks for, as plain values: a filter tree and a page position. DeliveryService
parses the AIP-160 text into these; the repository turns them into SQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from imagery.common.domain import ImageStatus

Equality = Literal["=", "!="]
Ordering = Literal["<", "<=", ">", ">=", "=", "!="]


@dataclass(frozen=True, slots=True)
class StatusIs:
    op: Equality
    status: ImageStatus


@dataclass(frozen=True, slots=True)
class LabelIs:
    """`labels.<key> = value`; `!=` also matches images without the label."""

    op: Equality
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class HasLabel:
    key: str


@dataclass(frozen=True, slots=True)
class CreatedAt:
    op: Ordering
    at: datetime


@dataclass(frozen=True, slots=True)
class Not:
    part: Filter


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Filter, ...]


Filter = StatusIs | LabelIs | HasLabel | CreatedAt | Not | AllOf | AnyOf


@dataclass(frozen=True, slots=True)
class PagePosition:
    """The last image of the previous page: the next one starts after it in
    (create_time desc, image_id) order."""

    created_at: datetime
    image_id: str
