"""The fake's ListImages filter held to imagery's own parser (imagery.delivery.filtering): for
each filter of a corpus and of a seeded random sample, both accept it or both refuse it with
the same problem, and an accepted one lists the same images as imagery's SQL would (a
comparison with a label the image lacks is NULL there, and so is its NOT)."""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from imagery.client.testing._filter import parse_filter as fake_filter
from imagery.client.testing._rules import Refusal
from imagery.common.errors import InvalidArgument
from imagery.common.listing import (
    AllOf,
    AnyOf,
    CreatedAt,
    Filter,
    HasLabel,
    LabelIs,
    Not,
    StatusIs,
)
from imagery.delivery.filtering import parse_filter as imagery_filter
from imagery.v1 import image_pb2

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_COLUMN = re.compile(r" at column \d+$")  # lark counts columns its own way


def _image(status: str, labels: dict[str, str], created: datetime) -> image_pb2.Image:
    image = image_pb2.Image(status=image_pb2.ImageStatus.Value(f"IMAGE_STATUS_{status}"))
    image.labels.update(labels)
    image.create_time.FromDatetime(created)
    return image


IMAGES = [
    _image(status, labels, T0 + offset)
    for status in ("PENDING", "PROCESSING", "READY", "FAILED")
    for labels in ({}, {"a": "x"}, {"a": "y", "b": "x"}, {"b": ""})
    for offset in (timedelta(hours=-1), timedelta(0), timedelta(microseconds=1))
]


def _sql(node: Filter, image: image_pb2.Image) -> bool | None:
    """What imagery's SQL makes of `node` for `image`: True, False or NULL (None)."""
    match node:
        case StatusIs(op, status):
            same = image_pb2.ImageStatus.Name(image.status) == f"IMAGE_STATUS_{status.name}"
            return same if op == "=" else not same
        case LabelIs(op, key, value):
            has = image.labels.get(key)
            if op == "!=":  # IS DISTINCT FROM
                return has != value
            return None if has is None else has == value
        case HasLabel(key):
            return key in image.labels
        case CreatedAt(op, at):
            created = image.create_time.ToDatetime(UTC)
            return {
                "=": created == at,
                "!=": created != at,
                "<": created < at,
                "<=": created <= at,
                ">": created > at,
                ">=": created >= at,
            }[op]
        case Not(part):  # (...) IS NOT TRUE
            return _sql(part, image) is not True
        case AllOf(parts):
            answers = [_sql(p, image) for p in parts]
            return False if False in answers else None if None in answers else True
        case AnyOf(parts):
            answers = [_sql(p, image) for p in parts]
            return True if True in answers else None if None in answers else False
    raise TypeError(node)


def _imagery(text: str) -> tuple[str | None, Filter | None]:
    # An unknown escape (\q) is a DeprecationWarning there, which a running server logs and
    # lets pass; only this test process turns warnings into errors.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return None, imagery_filter(text)
        except InvalidArgument as refused:
            field, problem = refused.violations[0].field, refused.violations[0].description
            return f"{refused.reason} {field}: {_COLUMN.sub('', problem)}", None


def _fake(text: str) -> tuple[str | None, Callable[[image_pb2.Image], bool] | None]:
    try:
        return None, fake_filter(text)
    except Refusal as refused:
        field, problem = refused.violations[0]
        return f"{refused.reason} {field}: {_COLUMN.sub('', problem)}", None


def _agree(text: str) -> bool:
    """Asserts that imagery and the fake agree on `text`; whether they accepted it."""
    problem, tree = _imagery(text)
    fake_problem, match = _fake(text)
    assert fake_problem == problem, text
    if match is None:
        return False
    listed = [i for i, image in enumerate(IMAGES) if match(image)]
    expected = [i for i, image in enumerate(IMAGES) if tree is None or _sql(tree, image) is True]
    assert listed == expected, text
    return True


CORPUS = [
    "",
    "   ",
    "status = READY",
    "status=READY",
    'status = "READY"',
    "status = ready",
    "status = IMAGE_STATUS_FAILED",
    "status = UNSPECIFIED",
    "status > READY",
    '"status" = PENDING',
    "labels.a = x",
    "labels.a != x",
    'labels."a" = "x"',
    "labels . a = x",
    "labels.a.b = c",
    "labels.a : x",
    "labels.a < x",
    "labels = a",
    "labels:b",
    "labels:a-b",
    "labels:-a",
    "-labels:a",
    "- labels:a",
    "NOT labels.a = x",
    "NOTlabels.a = x",
    "NOT(labels.a = x)",
    "NOT NOT labels:a",
    "NOTE = x",
    "labels:a -labels:b",
    "labels:a labels:b OR labels:c",
    "labels.a = x OR labels.b = x AND status = READY",
    "labels.a = x ORlabels.b = x",
    "labels.a = xAND labels:b",
    "labels.a = ORANGE",
    "labels.AND = x",
    "(status = READY OR status = FAILED) AND NOT labels.a = y",
    "NOT (labels.a = x OR labels.b = x)",
    "labels:a OR (labels:b OR -labels.a = y) labels:b",
    "()",
    "(labels:a",
    "labels:a)",
    "labels:a OR",
    "AND labels:a",
    "labels:a AND  AND labels:b",
    "labels.a = 1.5",
    "labels.a = -x",
    'labels.a = "x\\"y"',
    "labels.a = 'x'",
    'labels.a = "\\q"',
    'labels.a = "\\x"',
    'labels.a = "\\u00e9"',
    'labels.a = "\\é"',
    "labels.a = x\tAND\nlabels:b",
    "labels.a = x\fAND labels:b",
    "labels.a = x\u00a0",
    'create_time > "2026-01-01T00:00:00Z"',
    'create_time >= "2026-01-01T00:00:00+00:00"',
    'create_time = "2026-01-01T00:00:00.000001Z"',
    'create_time != "2026-01-01T01:00:00+01:00"',
    'create_time < "2026-01-01T00:00:00"',
    'create_time > "2026-01-01"',
    'create_time > "yesterday"',
    'create_time : "2026-01-01T00:00:00Z"',
    "create_time > 2026",
    "size_bytes > 10",
    "regex(name, x)",
    " OR ".join(["labels:a"] * 50),
    " OR ".join(["labels:a"] * 51),
    "labels:a " * 300,
    "(" * 32 + "labels:a" + ")" * 32,
    "(" * 33 + "labels:a" + ")" * 33,
    "labels.a = " + '"' + "(" * 40 + '"',
]


@pytest.mark.parametrize("text", CORPUS)
def test_the_fake_reads_each_filter_as_imagery_does(text: str) -> None:
    _agree(text)


RESTRICTIONS = [
    "status = READY",
    "status != FAILED",
    'status = "PENDING"',
    "status = IMAGE_STATUS_PROCESSING",
    "labels.a = x",
    'labels.a != "y"',
    "labels.b = x",
    'labels."b" = ""',
    "labels:b",
    "labels:a",
    'create_time > "2026-01-01T00:00:00Z"',
    'create_time <= "2026-01-01T01:00:00+01:00"',
    'create_time = "2026-01-01T00:00:00.000001Z"',
    "status >= READY",
    'create_time > "2026-01-01T00:00:00"',
    "labels.a < x",
    "width = 1",
]


def _random_filter(rng: random.Random, depth: int = 0) -> str:
    if depth > 3 or rng.random() < 0.45:
        text = rng.choice(RESTRICTIONS)
    else:
        text = f"({_random_filter(rng, depth + 1)})"
    if rng.random() < 0.25:
        text = rng.choice(["NOT ", "-", "NOT", "- "]) + text
    if rng.random() < 0.5:
        joint = rng.choice([" AND ", " OR ", " ", "  AND\t", "AND ", " OR", "\n"])
        text += joint + _random_filter(rng, depth + 1)
    return text


def _token_soup(rng: random.Random) -> str:
    pieces = ["status", "labels", "create_time", ".", ":", "=", "!=", "<", "a", "x", "READY"]
    pieces += ["AND", "OR", "NOT", "-", "(", ")", '"x y"', "'q'", '"2026-01-01T00:00:00Z"']
    pieces += ["NOTE", "ORx", '"\\q"', '"\\x"', "labels.a", "labels:b", '"status"']
    count = rng.randint(1, 9)
    return "".join(rng.choice(pieces) + rng.choice(["", " ", "\t"]) for _ in range(count))


def test_the_fake_agrees_with_imagery_on_random_filters() -> None:
    rng = random.Random(160)
    accepted = [_agree(_random_filter(rng)) for _ in range(1500)]
    accepted += [_agree(_token_soup(rng)) for _ in range(1500)]
    assert 500 < sum(accepted) < len(accepted) - 500, "accepted and refused ones both"
