"""proto <-> domain for UploadService."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from imagery.common.presets import Preset
from imagery.common.profiles import VariantProfile
from imagery.common.tenancy import (
    RPC_CLASSES,
    SETTING_NAMES,
    ApiKeyInfo,
    EffectiveSettings,
    KeyLimits,
    Project,
    ProjectSettings,
    SettingsPolicy,
)
from imagery.common.upload_limits import UploadLimits
from imagery.upload.projects import RequestedProfile
from imagery.upload.use_cases import UploadRequest, UploadTicket
from imagery.v1 import project_pb2
from imagery.v1 import upload_service_pb2 as pb


def upload_request(message: pb.CreateUploadUrlRequest) -> UploadRequest:
    return UploadRequest(
        content_type=message.content_type,
        file_name=message.file_name,
        size_bytes=message.size_bytes if message.HasField("size_bytes") else None,
        sha256=message.sha256,
        method=message.upload_method,
        labels=dict(message.labels),
        request_id=message.request_id,
        limits=_upload_limits(message.limits) if message.HasField("limits") else None,
    )


def _upload_limits(message: pb.UploadLimits) -> UploadLimits:
    """0 (unset) is "the project's", as is an unset `allow_animation`."""
    return UploadLimits(
        max_width=message.max_width or None,
        max_height=message.max_height or None,
        max_pixels=message.max_pixels or None,
        max_frames=message.max_frames or None,
        allow_animation=message.allow_animation if message.HasField("allow_animation") else None,
    )


def ticket_to_proto(ticket: UploadTicket) -> pb.CreateUploadUrlResponse:
    expire_time = Timestamp()
    expire_time.FromDatetime(ticket.expire_time)
    return pb.CreateUploadUrlResponse(
        image_id=ticket.image_id,
        upload_url=ticket.upload_url,
        expire_time=expire_time,
        required_headers=ticket.required_headers,
        upload_method=ticket.method,
        max_size_bytes=ticket.max_size_bytes,
        form_fields=ticket.form_fields,
    )


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def timestamp_or_none(message: Message, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    value: datetime = getattr(message, field).ToDatetime(tzinfo=UTC)
    return value


def settings_to_proto(settings: ProjectSettings | EffectiveSettings) -> project_pb2.ProjectSettings:
    values = {
        name: getattr(settings, name)
        for name in SETTING_NAMES
        if getattr(settings, name) is not None
    }
    return project_pb2.ProjectSettings(**values)


def settings_from_proto(message: project_pb2.ProjectSettings) -> ProjectSettings:
    generic: Message = message
    values: dict[str, Any] = {
        name: getattr(message, name)
        for name in SETTING_NAMES
        if name != "content_types" and generic.HasField(name)
    }
    if message.content_types:
        values["content_types"] = tuple(message.content_types)
    return ProjectSettings(**values)


def project_to_proto(
    project: Project, policy: SettingsPolicy, default: VariantProfile
) -> project_pb2.Project:
    return project_pb2.Project(
        variant_profile=profile_to_proto(project.profile or default),
        name=f"projects/{project.id}",
        display_name=project.display_name,
        settings=settings_to_proto(project.settings),
        effective_settings=settings_to_proto(policy.effective(project.settings)),
        create_time=_timestamp(project.created_at),
        update_time=_timestamp(project.updated_at),
        delete_time=_timestamp(project.deleted_at),
        purge_time=_timestamp(project.purge_time),
        operator=project.operator,
        usage=None
        if project.usage is None
        else project_pb2.ProjectUsage(
            images=project.usage.images,
            bytes=project.usage.bytes,
            uploads_today=project.usage.uploads_today,
        ),
    )


_POLICIES = {
    "fallback": project_pb2.LAZY_POLICY_FALLBACK,
    "pending": project_pb2.LAZY_POLICY_PENDING,
}


def profile_to_proto(profile: VariantProfile) -> project_pb2.VariantProfile:
    return project_pb2.VariantProfile(
        version=profile.version,
        presets=[
            project_pb2.VariantPreset(
                name=p.name,
                width=p.max_width or 0,
                height=p.max_height or 0,
                fit=project_pb2.FIT_COVER if p.crop else project_pb2.FIT_INSIDE,
                formats=list(p.formats),
                quality=p.quality,
                max_bytes=p.max_bytes,
                lazy=p.lazy,
            )
            for p in profile.presets
        ],
        lazy_policy=_POLICIES[profile.lazy_policy],
        create_time=_timestamp(profile.created_at),
        blurhash_components=project_pb2.BlurHashComponents(
            x=profile.blurhash_components[0], y=profile.blurhash_components[1]
        ),
    )


def requested_profile(project: project_pb2.Project) -> RequestedProfile | None:
    """The profile an UpdateProject request carries (None: it sets none)."""
    generic: Message = project
    if not generic.HasField("variant_profile"):
        return None
    message = project.variant_profile
    policies = {value: name for name, value in _POLICIES.items()}
    policies[project_pb2.LAZY_POLICY_UNSPECIFIED] = "fallback"
    presets = []
    for p in message.presets:
        preset: Message = p
        presets.append(
            Preset(
                p.name,
                p.width or None,
                p.height or None,
                crop=p.fit == project_pb2.FIT_COVER,
                formats=tuple(p.formats),
                quality=p.quality if preset.HasField("quality") else None,
                max_bytes=p.max_bytes if preset.HasField("max_bytes") else None,
                lazy=p.lazy,
            )
        )
    policy = policies.get(message.lazy_policy, f"value {message.lazy_policy}")
    if not message.HasField("blurhash_components"):
        return RequestedProfile(tuple(presets), policy)
    components = (message.blurhash_components.x, message.blurhash_components.y)
    return RequestedProfile(tuple(presets), policy, components)


def api_key_to_proto(key: ApiKeyInfo) -> project_pb2.ApiKey:
    return project_pb2.ApiKey(
        name=f"projects/{key.project_id}/apiKeys/{key.key_id}",
        display_name=key.display_name,
        scopes=sorted(s.value for s in key.scopes),
        expire_time=_timestamp(key.expire_time),
        create_time=_timestamp(key.created_at),
        revoke_time=_timestamp(key.revoked_at),
        last_use_time=_timestamp(key.last_used_at),
        creator=key.created_by,
        **{f"rate_{name}_per_minute": value for name, value in key.limits.to_json().items()},
    )


def key_limits_from_proto(key: project_pb2.ApiKey) -> KeyLimits:
    generic: Message = key
    return KeyLimits(
        **{
            name: getattr(key, f"rate_{name}_per_minute")
            for name in RPC_CLASSES
            if generic.HasField(f"rate_{name}_per_minute")
        }
    )
