"""The commands that call ProjectService, as any client would: an admin key in
`authorization: Bearer` or a mapped client certificate (mTLS), plaintext or TLS, and
`x-imagery-actor: cli:<os user>` so the audit trail names the person behind the key.

A dry run makes only reads (GetProject, ListApiKeys): it proves the key, the address and the
target, and says what the change would be."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from imagery.admin.actor import cli_principal
from imagery.admin.output import CliError
from imagery.common.tenancy import RPC_CLASSES, SETTING_NAMES
from imagery.v1 import project_pb2
from imagery.v1 import project_service_pb2 as pb
from imagery.v1 import project_service_pb2_grpc as pb_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
TIMEOUT_SECONDS = 30.0
Plain = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Target:
    address: str
    key: str | None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None


class RpcFailed(CliError):
    """A call the server refused or could not answer; `reason` is its ErrorInfo reason."""

    def __init__(self, message: str, reason: str | None) -> None:
        super().__init__(message)
        self.reason = reason


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"Cannot read {path} ({exc.strerror}): check the file path.") from exc


def _reason(exc: grpc.RpcError) -> str | None:
    """The ErrorInfo reason in the rich status (grpc-status-details-bin), if any."""
    if not isinstance(exc, grpc.Call):
        return None
    try:
        status = rpc_status.from_call(exc)
    except ValueError:
        return None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return None


class Client:
    """One channel to ProjectService; every call carries the key and the actor."""

    def __init__(self, target: Target) -> None:
        if not target.key and target.tls_cert is None:
            raise CliError(
                "No credentials: pass --key or set IMAGERY_ADMIN_KEY (`imagery-admin bootstrap` "
                "prints the first one), or use a mapped client certificate (--tls-cert)."
            )
        self._address = target.address
        # Without a key, the client certificate's mapped identity is the caller.
        self._metadata: tuple[tuple[str, str], ...] = (("x-imagery-actor", cli_principal()),)
        if target.key:
            self._metadata += (("authorization", f"Bearer {target.key}"),)
        if target.tls_ca or target.tls_cert:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(target.tls_ca),
                private_key=_read(target.tls_key),
                certificate_chain=_read(target.tls_cert),
            )
            self._channel = grpc.secure_channel(target.address, credentials)
        else:
            self._channel = grpc.insecure_channel(target.address)
        self._stub = pb_grpc.ProjectServiceStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self._channel.close()

    def call(self, method: str, request: Message) -> Any:
        rpc: Callable[..., Any] = getattr(self._stub, method)
        try:
            return rpc(request, metadata=self._metadata, timeout=TIMEOUT_SECONDS)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def _error(self, exc: grpc.RpcError) -> RpcFailed:
        code: grpc.StatusCode = exc.code()
        message = str(exc.details() or code.name)
        reason = _reason(exc)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and not reason:
            message = (
                f"Cannot reach imagery at {self._address} ({message.splitlines()[0][:200]}): "
                "check --address or IMAGERY_ADDRESS, and --tls-ca if the server speaks TLS."
            )
        return RpcFailed(f"{message} ({reason or code.name})", reason)


def _time(message: Message, field: str) -> str | None:
    if not message.HasField(field):
        return None
    stamp: Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC).isoformat()


def settings_data(settings: project_pb2.ProjectSettings) -> Plain:
    generic: Message = settings
    data: Plain = {}
    for name in SETTING_NAMES:
        if name == "content_types":
            if settings.content_types:
                data[name] = list(settings.content_types)
        elif generic.HasField(name):
            value = getattr(settings, name)
            data[name] = value if isinstance(value, bool) else int(value)
    return data


def usage_data(project: project_pb2.Project) -> Plain:
    """The project's usage against each quota in force (0: unlimited)."""
    quotas = project.effective_settings
    return {
        "project_id": project.name.removeprefix("projects/"),
        "images": {"used": project.usage.images, "quota": quotas.quota_images},
        "bytes": {"used": project.usage.bytes, "quota": quotas.quota_bytes},
        "uploads_today": {
            "used": project.usage.uploads_today,
            "quota": quotas.quota_uploads_per_day,
        },
    }


def usage(client: Client, project_id: str | None) -> list[Plain]:
    if project_id is not None:
        response = client.call("GetProject", pb.GetProjectRequest(name=f"projects/{project_id}"))
        return [usage_data(response.project)]
    request = pb.ListProjectsRequest(page_size=100)
    return [usage_data(p) for p in _pages(client, "ListProjects", request, "projects")]


def project_data(project: project_pb2.Project) -> Plain:
    return {
        "name": project.name,
        "project_id": project.name.removeprefix("projects/"),
        "display_name": project.display_name,
        "operator": project.operator,
        "settings": settings_data(project.settings),
        "effective_settings": settings_data(project.effective_settings),
        "create_time": _time(project, "create_time"),
        "update_time": _time(project, "update_time"),
        "delete_time": _time(project, "delete_time"),
        "purge_time": _time(project, "purge_time"),
    }


def key_data(key: project_pb2.ApiKey) -> Plain:
    parts = key.name.split("/")  # projects/{project}/apiKeys/{key}
    project_id, key_id = (parts[1], parts[3]) if len(parts) == 4 else ("", key.name)
    return {
        "name": key.name,
        "key_id": key_id,
        "project_id": project_id,
        "display_name": key.display_name,
        "scopes": list(key.scopes),
        "expire_time": _time(key, "expire_time"),
        "create_time": _time(key, "create_time"),
        "revoke_time": _time(key, "revoke_time"),
        "last_use_time": _time(key, "last_use_time"),
        "creator": key.creator,
        "rate_limits_per_minute": {
            name: getattr(key, f"rate_{name}_per_minute")
            for name in RPC_CLASSES
            if getattr(key, f"rate_{name}_per_minute")
        },
    }


def _settings_message(settings: Mapping[str, Any]) -> project_pb2.ProjectSettings:
    return project_pb2.ProjectSettings(**settings)


def get_project(client: Client, project_id: str) -> Plain:
    response = client.call("GetProject", pb.GetProjectRequest(name=f"projects/{project_id}"))
    return project_data(response.project)


def _exists(client: Client, project_id: str) -> bool:
    try:
        get_project(client, project_id)
    except RpcFailed as exc:
        if exc.reason == "PROJECT_NOT_FOUND":
            return False
        raise
    return True


def create_project(
    client: Client, project_id: str, display_name: str, settings: Mapping[str, Any], dry_run: bool
) -> Plain:
    if dry_run:
        if _exists(client, project_id):
            raise CliError(
                f"Project {project_id!r} exists already: choose another id, or change it with "
                "`imagery-admin projects update`."
            )
        return {
            "dry_run": True,
            "project_id": project_id,
            "display_name": display_name,
            "settings": dict(settings),
        }
    request = pb.CreateProjectRequest(
        project_id=project_id,
        project=project_pb2.Project(
            display_name=display_name, settings=_settings_message(settings)
        ),
    )
    return project_data(client.call("CreateProject", request).project)


def _pages(client: Client, method: str, request: Any, items: str) -> list[Any]:
    """Every item of a paginated List call, following next_page_token to the end."""
    found: list[Any] = []
    while True:
        response = client.call(method, request)
        found += getattr(response, items)
        if not response.next_page_token:
            return found
        request.page_token = response.next_page_token


def list_projects(client: Client, *, show_deleted: bool, page_size: int) -> list[Plain]:
    request = pb.ListProjectsRequest(page_size=page_size, show_deleted=show_deleted)
    return [project_data(p) for p in _pages(client, "ListProjects", request, "projects")]


def update_project(
    client: Client,
    project_id: str,
    display_name: str | None,
    settings: Mapping[str, Any],
    dry_run: bool,
) -> Plain:
    paths = (["display_name"] if display_name is not None else []) + [
        f"settings.{name}" for name in settings
    ]
    if dry_run:
        before = get_project(client, project_id)
        changes: Plain = {}
        if display_name is not None:
            changes["display_name"] = {"from": before["display_name"], "to": display_name}
        for name, value in settings.items():
            changes[f"settings.{name}"] = {"from": before["settings"].get(name), "to": value}
        return {"dry_run": True, "project_id": project_id, "changes": changes}
    request = pb.UpdateProjectRequest(
        project=project_pb2.Project(
            name=f"projects/{project_id}",
            display_name=display_name or "",
            settings=_settings_message(settings),
        ),
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )
    return project_data(client.call("UpdateProject", request).project)


def delete_project(client: Client, project_id: str, dry_run: bool) -> Plain:
    if dry_run:
        project = get_project(client, project_id)
        if project["operator"]:
            raise CliError("The operator project cannot be deleted: delete other projects only.")
        return {"dry_run": True, "project": project}
    request = pb.DeleteProjectRequest(name=f"projects/{project_id}")
    return project_data(client.call("DeleteProject", request).project)


def create_key(
    client: Client,
    project_id: str,
    display_name: str,
    scopes: Sequence[str],
    expire_time: datetime | None,
    dry_run: bool,
    limits: Mapping[str, int] | None = None,
) -> Plain:
    rates = {f"rate_{name}_per_minute": value for name, value in (limits or {}).items()}
    if dry_run:
        project = get_project(client, project_id)
        if project["delete_time"]:
            raise CliError(f"Project {project_id!r} is deleted: its keys cannot work.")
        return {
            "dry_run": True,
            "project_id": project_id,
            "display_name": display_name,
            "scopes": sorted(scopes),
            "expire_time": None if expire_time is None else expire_time.isoformat(),
            "rate_limits_per_minute": dict(limits or {}),
        }
    key = project_pb2.ApiKey(display_name=display_name, scopes=sorted(scopes))
    for field, value in rates.items():
        setattr(key, field, value)
    if expire_time is not None:
        key.expire_time.FromDatetime(expire_time)
    request = pb.CreateApiKeyRequest(parent=f"projects/{project_id}", api_key=key)
    response = client.call("CreateApiKey", request)
    return {"api_key": key_data(response.api_key), "key": response.key}


def list_keys(client: Client, project_id: str) -> list[Plain]:
    request = pb.ListApiKeysRequest(parent=f"projects/{project_id}", page_size=1000)
    return [key_data(k) for k in _pages(client, "ListApiKeys", request, "api_keys")]


def revoke_key(client: Client, project_id: str, key_id: str, dry_run: bool) -> Plain:
    if dry_run:
        for key in list_keys(client, project_id):
            if key["key_id"] == key_id:
                return {"dry_run": True, "api_key": key}
        raise CliError(
            f"Project {project_id!r} has no API key {key_id!r}: `imagery-admin keys list "
            f"{project_id}` shows its keys (API_KEY_NOT_FOUND)."
        )
    request = pb.RevokeApiKeyRequest(name=f"projects/{project_id}/apiKeys/{key_id}")
    return {"api_key": key_data(client.call("RevokeApiKey", request).api_key)}
