"""One handler per command: gather the arguments, do the work (`direct` or `rpc`), print."""

from __future__ import annotations

import os
from argparse import Namespace
from typing import Any

from imagery.admin import backfill as backfills
from imagery.admin import direct, dlq, jobs, migrations, output, rpc
from imagery.admin import reprocess as reprocesses
from imagery.admin import similar as similars
from imagery.admin import takedown as takedowns
from imagery.admin.output import emit
from imagery.common.tenancy import RPC_CLASSES, SETTING_NAMES, Scope


class UsageError(Exception):
    """Arguments argparse cannot judge alone; exits 2 with the usage."""


def _dsn(args: Namespace) -> str:
    dsn: str | None = args.database_url or os.environ.get("DATABASE_URL")
    if not dsn:
        raise UsageError("set DATABASE_URL or pass --database-url")
    return dsn


def _client(args: Namespace) -> rpc.Client:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    return rpc.Client(
        rpc.Target(
            address=args.address or os.environ.get("IMAGERY_ADDRESS") or rpc.DEFAULT_ADDRESS,
            key=args.key or os.environ.get("IMAGERY_ADMIN_KEY"),
            tls_ca=args.tls_ca,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
    )


def _settings(args: Namespace) -> dict[str, Any]:
    return {
        name: value
        for name in SETTING_NAMES
        if (value := getattr(args, f"setting_{name}")) is not None
    }


def bootstrap(args: Namespace) -> None:
    dsn = _dsn(args)
    data = direct.run(
        lambda: direct.bootstrap(dsn, project_key=args.project_key, dry_run=args.dry_run)
    )
    emit(args.json, data, lambda: output.bootstrap_text(data))


def projects_create(args: Namespace) -> None:
    settings = _settings(args)
    with _client(args) as client:
        data = rpc.create_project(
            client, args.project_id, args.display_name, settings, args.dry_run
        )
    if args.dry_run:
        text = output.dry_run_text(
            [
                f"create project projects/{args.project_id} ({args.display_name!r}) with "
                + output.settings_phrase(settings)
            ]
        )
        emit(args.json, data, lambda: text)
    else:
        emit(args.json, data, lambda: "Created " + output.project_text(data))


def projects_get(args: Namespace) -> None:
    with _client(args) as client:
        data = rpc.get_project(client, args.project_id)
    emit(args.json, data, lambda: output.project_text(data))


def usage(args: Namespace) -> None:
    with _client(args) as client:
        data = rpc.usage(client, args.project_id)
    emit(args.json, data, lambda: output.usage_text(data))


def projects_list(args: Namespace) -> None:
    with _client(args) as client:
        data = rpc.list_projects(client, show_deleted=args.show_deleted, page_size=args.page_size)
    emit(args.json, data, lambda: output.projects_text(data))


def projects_update(args: Namespace) -> None:
    settings = _settings(args)
    if args.display_name is None and not settings:
        raise UsageError("name at least one field to change: --display-name or a setting flag")
    with _client(args) as client:
        data = rpc.update_project(
            client, args.project_id, args.display_name, settings, args.dry_run
        )
    if args.dry_run:
        changes = data["changes"]
        text = output.dry_run_text(
            [
                f"set {path} of projects/{args.project_id} from "
                f"{output.value_text(c['from'])} to {output.value_text(c['to'])}"
                for path, c in changes.items()
            ]
        )
        emit(args.json, data, lambda: text)
    else:
        emit(args.json, data, lambda: "Updated " + output.project_text(data))


def projects_delete(args: Namespace) -> None:
    with _client(args) as client:
        data = rpc.delete_project(client, args.project_id, args.dry_run)
    if args.dry_run:
        text = output.dry_run_text(
            [
                f"delete projects/{args.project_id}: its keys stop working at once and its "
                "images are purged after the retention"
            ]
        )
        emit(args.json, data, lambda: text)
    else:
        emit(
            args.json,
            data,
            lambda: (
                f"Deleted {data['name']}: its keys no longer work; its images are purged "
                f"at {output.when(data['purge_time'])}."
            ),
        )


def keys_create(args: Namespace) -> None:
    with _client(args) as client:
        limits = {
            name: value
            for name in RPC_CLASSES
            if (value := getattr(args, f"rate_{name}_per_minute"))
        }
        data = rpc.create_key(
            client,
            args.project_id,
            args.display_name,
            args.scopes,
            args.expire_time,
            args.dry_run,
            limits,
        )
    if args.dry_run:
        expires = output.when(data["expire_time"]) if data["expire_time"] else "never"
        text = output.dry_run_text(
            [
                f"create API key {args.display_name!r} in projects/{args.project_id}, scopes "
                f"{', '.join(data['scopes'])}, expires {expires}"
            ]
        )
        emit(args.json, data, lambda: text)
    else:
        emit(args.json, data, lambda: output.new_key_text(data["api_key"], data["key"]))


def keys_list(args: Namespace) -> None:
    with _client(args) as client:
        data = rpc.list_keys(client, args.project_id)
    emit(args.json, data, lambda: output.keys_text(data))


def keys_revoke(args: Namespace) -> None:
    with _client(args) as client:
        data = rpc.revoke_key(client, args.project_id, args.key_id, args.dry_run)
    key = data["api_key"]
    if args.dry_run:
        text = output.dry_run_text([f"revoke API key {key['name']} ({key['display_name']!r})"])
        emit(args.json, data, lambda: text)
    else:
        emit(
            args.json,
            data,
            lambda: (
                f"Revoked API key {key['name']} at {output.when(key['revoke_time'])}: "
                "every replica refuses it now."
            ),
        )


def identities_map(args: Namespace) -> None:
    dsn = _dsn(args)
    scopes = [Scope(s) for s in args.scopes]
    data = direct.run(
        lambda: direct.map_identity(dsn, args.identity, args.project, scopes, dry_run=args.dry_run)
    )
    what = f"identity {args.identity!r} to projects/{args.project}, scopes {', '.join(args.scopes)}"
    before = data["previous"]
    was = (
        ""
        if before is None
        else f" (was projects/{before['project_id']}, {', '.join(before['scopes'])})"
    )
    if args.dry_run:
        emit(args.json, data, lambda: output.dry_run_text([f"map {what}{was}"]))
    else:
        emit(args.json, data, lambda: f"Mapped {what}{was}.")


def identities_revoke(args: Namespace) -> None:
    dsn = _dsn(args)
    data = direct.run(lambda: direct.revoke_identity(dsn, args.identity, dry_run=args.dry_run))
    if data["already_revoked"]:
        revoked = output.when(data["revoke_time"])
        text = f"Identity {args.identity!r} was revoked already, at {revoked}."
    elif args.dry_run:
        text = output.dry_run_text(
            [f"revoke identity {args.identity!r} of projects/{data['project_id']}"]
        )
    else:
        text = f"Revoked identity {args.identity!r} of projects/{data['project_id']}."
    emit(args.json, data, lambda: text)


def identities_list(args: Namespace) -> None:
    dsn = _dsn(args)
    data = direct.run(lambda: direct.list_identities(dsn, args.project))
    emit(args.json, data, lambda: output.identities_text(data))


def audit(args: Namespace) -> None:
    dsn = _dsn(args)
    data = direct.run(lambda: direct.audit_events(dsn, args.project, args.limit))
    emit(args.json, data, lambda: output.audit_text(data))


def migrate(args: Namespace) -> None:
    dsn = _dsn(args)
    data = direct.run(lambda: direct.run_migrations(dsn, dry_run=args.dry_run))
    if args.dry_run:
        pending = data["pending"]
        text = output.dry_run_text([f"apply {name}" for name in pending] or ["nothing: up to date"])
    else:
        applied = data["applied"]
        text = (
            f"Applied {len(applied)} migration(s): {', '.join(applied)}."
            if applied
            else "The database is up to date."
        )
    emit(args.json, data, lambda: text)


def migrate_status(args: Namespace) -> int:
    return migrations.status_command(args, _dsn(args))


def dlq_list(args: Namespace) -> None:
    dlq.list_command(args, _dsn(args))


def dlq_redrive(args: Namespace) -> None:
    dlq.redrive_command(args, _dsn(args))


def projects_purge(args: Namespace) -> None:
    jobs.projects_purge(args, _dsn(args))


def jobs_list(args: Namespace) -> None:
    jobs.jobs_list(args, _dsn(args))


def backfill(args: Namespace) -> None:
    backfills.backfill(args, _dsn(args))


def block(args: Namespace) -> None:
    takedowns.block(args, _dsn(args))


def unblock(args: Namespace) -> None:
    takedowns.unblock(args, _dsn(args))


def blocked(args: Namespace) -> None:
    takedowns.blocked(args, _dsn(args))


def similar(args: Namespace) -> None:
    similars.similar(args, _dsn(args))


def reprocess(args: Namespace) -> None:
    if bool(args.image_ids) == args.all_retained:
        raise UsageError("give image ids, or --project P --all-retained (not both)")
    if args.all_retained and args.project is None:
        raise UsageError("--all-retained needs --project")
    reprocesses.reprocess(args, _dsn(args))
