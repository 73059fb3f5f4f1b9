"""Variant profiles: what a project may ask for, and how a profile is stored and read back."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from imagery.common.config import ConfigError
from imagery.common.errors import InvalidArgument
from imagery.common.presets import DEFAULT_PRESETS, DEFAULT_PRESETS_SPEC, Preset, parse_presets
from imagery.common.profiles import (
    default_profile,
    profile_from_json,
    validate_profile,
)
from imagery.common.storage_keys import sha256_from_content_key, variant_key

CARD = Preset("card", 300, 200, crop=True, max_bytes=30_000)
HERO = Preset("hero", 1600, 900, formats=("webp",), quality=70, lazy=True)
SHA = "ab" * 32


def test_a_valid_profile_comes_back_whole_from_its_json() -> None:
    checked = validate_profile([CARD, HERO, Preset("full", None, None)], "pending")
    stored = dataclasses.replace(checked, version=4, created_at=datetime(2026, 12, 3, tzinfo=UTC))
    assert profile_from_json(stored.to_json()) == stored
    assert stored.at_ingest == (CARD, Preset("full", None, None))
    assert stored.preset("hero") == HERO and stored.preset("nope") is None
    assert profile_from_json(None) is None


def test_the_default_profile_is_the_deployments_presets_at_version_0() -> None:
    profile = default_profile(DEFAULT_PRESETS)
    assert profile.version == 0 and profile.names[0] == "thumbnail"
    assert profile.lazy_policy == "fallback"


@pytest.mark.parametrize(
    ("presets", "policy", "field", "problem"),
    [
        ([], "fallback", "presets", "is empty"),
        ([Preset(f"p{i}", 1, 1) for i in range(17)], "fallback", "presets", "17 presets"),
        ([Preset("Card", 1, 1)], "fallback", "presets[0].name", "'Card'"),
        ([CARD, CARD], "fallback", "presets[1].name", "repeats a name"),
        ([Preset("a", 300, None)], "fallback", "presets[0].width", "300x0"),
        ([Preset("a", 20_000, 10)], "fallback", "presets[0].width", "20000x10"),
        ([Preset("a", None, None, crop=True)], "fallback", "presets[0].fit", "without a box"),
        ([Preset("a", 1, 1, formats=("gif",))], "fallback", "presets[0].formats", "'gif'"),
        ([Preset("a", 1, 1, formats=("webp", "webp"))], "fallback", "presets[0].formats", "twice"),
        ([Preset("a", 1, 1, quality=80, max_bytes=5000)], "fallback", "presets[0].quality", "max"),
        ([Preset("a", 1, 1, quality=0)], "fallback", "presets[0].quality", "is 0"),
        ([Preset("a", 1, 1, max_bytes=10)], "fallback", "presets[0].max_bytes", "is 10"),
        ([CARD], "later", "lazy_policy", "'later'"),
        ([HERO], "fallback", "presets", "all lazy"),
    ],
)
def test_a_profile_imagery_cannot_render_is_refused_naming_the_field(
    presets: list[Preset], policy: str, field: str, problem: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate_profile(presets, policy)
    assert refused.value.violations[0].field == f"variant_profile.{field}"
    assert problem in refused.value.message


def test_versions_have_keys_of_their_own_and_version_0_keeps_the_old_layout() -> None:
    assert variant_key("", SHA, "small", "webp") == f"variants/{SHA}/small.webp"
    assert variant_key("", SHA, "small", "webp", 0) == f"variants/{SHA}/small.webp"
    assert variant_key("", SHA, "small", "webp", 7) == f"variants/{SHA}/v7/small.webp"
    assert sha256_from_content_key("", f"variants/{SHA}/v7/small.webp") == SHA
    assert sha256_from_content_key("", f"variants/{SHA}/x7/small.webp") is None


def test_variant_presets_may_mark_presets_lazy() -> None:
    parsed = parse_presets("thumb:150x150:crop,large:1600x1600:lazy,original:full:lazy")
    assert parsed == (
        Preset("thumb", 150, 150, crop=True),
        Preset("large", 1600, 1600, lazy=True),
        Preset("original", None, None, lazy=True),
    )
    assert parse_presets(DEFAULT_PRESETS_SPEC) == DEFAULT_PRESETS


@pytest.mark.parametrize(
    "spec",
    ["a:10x10:lazy:crop", "a:full:crop", "a:10x0", "a:lazy", "a:10x10,a:full", "", "a:full:lazy"],
)
def test_variant_presets_it_cannot_read_stop_start_up(spec: str) -> None:
    with pytest.raises(ConfigError, match="VARIANT_PRESETS"):
        parse_presets(spec)
