"""Project settings: what applies is the choice, else the deployment's default, never above
the deployment's ceiling; choices beyond a ceiling are refused with the field named."""

from __future__ import annotations

import dataclasses

import pytest

from imagery.common.errors import InvalidArgument, SettingAboveCeiling
from imagery.common.tenancy import (
    DEFAULT_PROJECT,
    Principal,
    ProjectSettings,
    Scope,
    content_address,
    global_content_types,
    parse_scopes,
    require_project_id,
)
from tests.principals import caller, policy


def test_unset_settings_take_the_defaults() -> None:
    applied = policy(max_upload_bytes=1000, signed_url_expiry_seconds=60).effective(
        ProjectSettings()
    )
    assert (applied.max_upload_bytes, applied.signed_url_ttl_seconds) == (1000, 60)
    assert applied.min_width == 0 and applied.quota_images == 0
    assert "image/png" in applied.content_types


def test_a_choice_up_to_the_ceiling_applies_and_a_lowered_ceiling_caps_it() -> None:
    chosen = ProjectSettings(signed_url_ttl_seconds=7 * 86400, max_upload_bytes=20_000_000)
    assert policy().effective(chosen).signed_url_ttl_seconds == 7 * 86400
    lowered = policy(signed_url_expiry_ceiling_seconds=3600, max_upload_bytes_ceiling=15_000_000)
    applied = lowered.effective(chosen)
    assert (applied.signed_url_ttl_seconds, applied.max_upload_bytes) == (3600, 15_000_000)


@pytest.mark.parametrize(
    ("chosen", "field"),
    [
        (ProjectSettings(signed_url_ttl_seconds=7 * 86400 + 1), "signed_url_ttl_seconds"),
        (ProjectSettings(max_upload_bytes=10**12), "max_upload_bytes"),
        (ProjectSettings(max_width=10_001), "max_width"),
    ],
)
def test_a_choice_above_the_ceiling_is_refused(chosen: ProjectSettings, field: str) -> None:
    with pytest.raises(SettingAboveCeiling) as refused:
        policy().validate(chosen, "project.settings.")
    assert refused.value.violations[0].field == f"project.settings.{field}"


def test_quotas_are_unlimited_unless_a_ceiling_says_otherwise() -> None:
    assert policy().effective(ProjectSettings(quota_images=0)).quota_images == 0
    capped = policy(project_quota_images_ceiling=100)
    assert capped.effective(ProjectSettings()).quota_images == 100
    with pytest.raises(SettingAboveCeiling):
        capped.validate(ProjectSettings(quota_images=0))


@pytest.mark.parametrize(
    "chosen",
    [
        ProjectSettings(content_types=("image/tiff",)),
        ProjectSettings(content_types=("image/heic; q=1",)),
        ProjectSettings(content_types=()),
        ProjectSettings(max_upload_bytes=0),
        ProjectSettings(min_width=-1),
        ProjectSettings(min_width=600, max_width=500),
    ],
)
def test_malformed_choices_are_refused(chosen: ProjectSettings) -> None:
    with pytest.raises(InvalidArgument):
        policy().validate(chosen)


def test_a_project_accepts_a_subset_of_the_allowlist() -> None:
    applied = policy().effective(ProjectSettings(content_types=("image/png", "image/webp")))
    assert applied.content_types == ("image/png", "image/webp")


def test_heic_and_heif_are_accepted_only_by_a_project_that_turns_them_on() -> None:
    defaults = policy().effective(ProjectSettings()).content_types
    assert defaults == ("image/jpeg", "image/png", "image/webp", "image/avif", "image/gif")
    assert global_content_types() == defaults
    chosen = ProjectSettings(content_types=(*defaults, "image/heic", "image/heif"))
    policy().validate(chosen)  # within the ceiling
    assert policy().effective(chosen).content_types == (*defaults, "image/heic", "image/heif")
    assert policy().effective(ProjectSettings(content_types=("image/heic",))).content_types == (
        "image/heic",
    )


def test_a_choice_a_lowered_ceiling_no_longer_allows_falls_back_to_the_defaults() -> None:
    base = policy()
    ceilings = dataclasses.replace(base.ceilings, content_types=("image/png", "image/heic"))
    lowered = dataclasses.replace(base, ceilings=ceilings, _memo={})
    applied = lowered.effective(ProjectSettings(content_types=("image/webp",)))
    assert applied.content_types == ("image/png",), "the defaults it still allows, not HEIC"


@pytest.mark.parametrize("value", ["ab", "A-team", "team_b", "-team", "team-", "9team", "x" * 64])
def test_project_ids_are_short_lower_case_names(value: str) -> None:
    with pytest.raises(InvalidArgument):
        require_project_id(value)
    assert require_project_id("team-b9") == "team-b9"


def test_scopes_are_parsed_strictly() -> None:
    assert parse_scopes(["images.read"]) == {Scope.IMAGES_READ}
    for bad in ([], ["images.*"], ["IMAGES.READ"]):
        with pytest.raises(InvalidArgument):
            parse_scopes(bad)


def test_content_addresses_are_scoped_except_in_the_empty_scope() -> None:
    sha = "ab" * 32
    assert content_address("", sha) == sha
    a, b = content_address("a" * 32, sha), content_address("b" * 32, sha)
    assert a != b and len(a) == 64 and sha not in (a, b)


def test_project_admin_covers_its_own_project_and_the_operator_every_project() -> None:
    admin = Principal("key", "k", "team-b", frozenset({Scope.PROJECTS_ADMIN}))
    operator = Principal("key", "o", "operator", frozenset({Scope.PROJECTS_ADMIN}), operator=True)
    reader = Principal("key", "r", DEFAULT_PROJECT, frozenset({Scope.IMAGES_READ}))
    assert admin.administers("team-b") and not admin.administers(DEFAULT_PROJECT)
    assert operator.administers("team-b") and operator.administers(DEFAULT_PROJECT)
    assert not reader.administers(DEFAULT_PROJECT)


def test_only_operators_stop_declared_uploads_that_the_deployment_requires() -> None:
    from imagery.common.errors import MissingScope
    from imagery.upload.projects import _require_operator_for_quotas as check

    strict = policy(project_require_declared_upload_default="true")
    admin = caller(operator=False)
    off = ProjectSettings(require_declared_upload=False)
    on = ProjectSettings(require_declared_upload=True)
    check(admin, ProjectSettings(), on, strict)  # stricter is anyone's choice
    with pytest.raises(MissingScope):
        check(admin, on, off, strict)
    check(caller(operator=True), on, off, strict)
    check(admin, on, off, policy())  # where the deployment does not require it, a project may
