"""imagery-admin: the command line, its arguments and exit codes (0 done, 1 refused or failed,
with one sentence on stderr saying what to do, 2 usage, 3 `migrate status`: migrations
pending)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeAlias

from imagery.admin import argtypes as types
from imagery.admin import commands, dlq, migrations
from imagery.admin import reconcile as reconciles
from imagery.admin.output import CliError
from imagery.admin.rpc import DEFAULT_ADDRESS
from imagery.common.config import ConfigError
from imagery.common.tenancy import RPC_CLASSES, SETTING_NAMES, SWITCHES

Parents: TypeAlias = dict[str, argparse.ArgumentParser]
Group: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
_SETTING_HELP = {
    "content_types": "accepted content types, comma-separated (a subset of the deployment's)",
    "max_upload_bytes": "largest upload in bytes",
    "min_width": "smallest accepted width in pixels (0: no minimum)",
    "min_height": "smallest accepted height in pixels (0: no minimum)",
    "max_width": "largest accepted width in pixels",
    "max_height": "largest accepted height in pixels",
    "signed_url_ttl_seconds": "lifetime of signed download URLs in seconds",
    "quota_images": "most images stored (0: unlimited)",
    "quota_bytes": "most bytes stored (0: unlimited)",
    "quota_uploads_per_day": "most uploads started per UTC day (0: unlimited)",
    "require_declared_upload": "true: uploads must declare size_bytes and sha256",
}


def _parents() -> Parents:
    out = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: `--json` after the command must not reset one given before it.
    out.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON, not text"
    )
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--database-url", help="Postgres DSN (default: $DATABASE_URL)")
    rpc = argparse.ArgumentParser(add_help=False)
    rpc.add_argument(
        "--address", help=f"host:port (default: $IMAGERY_ADDRESS or {DEFAULT_ADDRESS})"
    )
    rpc.add_argument("--key", help="an admin API key (default: $IMAGERY_ADMIN_KEY)")
    rpc.add_argument(
        "--tls-ca", type=Path, metavar="FILE", help="CA bundle: speak TLS and trust these roots"
    )
    rpc.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="client certificate for mTLS (with --tls-key); without --key, its identity calls",
    )
    rpc.add_argument("--tls-key", type=Path, metavar="FILE", help="client private key for mTLS")
    change = argparse.ArgumentParser(add_help=False)
    change.add_argument(
        "--dry-run", action="store_true", help="validate and show what would happen, change nothing"
    )
    return {"out": out, "db": db, "rpc": rpc, "change": change}


def _add_settings(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("project settings (unset: the deployment's default)")
    for name in SETTING_NAMES:
        group.add_argument(
            f"--{name.replace('_', '-')}",
            dest=f"setting_{name}",
            metavar="TYPES" if name == "content_types" else "BOOL" if name in SWITCHES else "N",
            type=types.content_types
            if name == "content_types"
            else types.switch
            if name in SWITCHES
            else types.count,
            help=_SETTING_HELP.get(name, name.replace("_", " ")),
        )


def _leaf(
    group: Group,
    name: str,
    handler: Callable[[argparse.Namespace], int | None],  # int: the exit code
    parents: Sequence[argparse.ArgumentParser],
    text: str,
) -> argparse.ArgumentParser:
    leaf = group.add_parser(name, parents=list(parents), help=text, description=text)
    leaf.set_defaults(handler=handler, parser=leaf)
    return leaf


def build_parser() -> argparse.ArgumentParser:
    parents = _parents()
    parser = argparse.ArgumentParser(
        prog="imagery-admin",
        description="Operate imagery: bootstrap, projects, keys, mTLS identities, usage, audit, "
        "backfills, reprocessing failed uploads, takedowns, dead letters, migrations.",
    )
    parser.add_argument("--json", action="store_true", default=False, help="print JSON, not text")
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_bootstrap(top, parents)
    _add_projects(top, parents)
    _add_keys(top, parents)
    _add_identities(top, parents)
    _add_jobs(top, parents)
    _add_backfill(top, parents)
    _add_reprocess(top, parents)
    _add_reconcile(top, parents)
    _add_similar(top, parents)
    _add_takedown(top, parents)
    usage = _leaf(
        top,
        "usage",
        commands.usage,
        [parents["out"], parents["rpc"]],
        "what projects store and started today, against their quotas",
    )
    usage.add_argument(
        "project_id", metavar="PROJECT", nargs="?", type=types.project_id, help="(default: all)"
    )
    _add_audit_and_migrate(top, parents)
    _add_dlq(top, parents)
    return parser


def _add_bootstrap(top: Group, p: Parents) -> None:
    boot = _leaf(
        top,
        "bootstrap",
        commands.bootstrap,
        [p["out"], p["db"], p["change"]],
        "create the operator project and its first admin key, straight in Postgres "
        "(only while no API key exists)",
    )
    boot.add_argument(
        "--project-key",
        metavar="PROJECT",
        type=types.project_id,
        help="also create an ordinary key (images.*) in this existing project, e.g. default",
    )


def _add_projects(top: Group, p: Parents) -> None:
    group = top.add_parser("projects", help="create, show, list, change and delete projects")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    read, change = [p["out"], p["rpc"]], [p["out"], p["rpc"], p["change"]]
    create = _leaf(sub, "create", commands.projects_create, change, "create a project")
    create.add_argument("project_id", metavar="ID", type=types.project_id)
    create.add_argument("--display-name", required=True)
    _add_settings(create)
    get = _leaf(sub, "get", commands.projects_get, read, "show a project")
    get.add_argument("project_id", metavar="ID", type=types.project_id)
    listing = _leaf(sub, "list", commands.projects_list, read, "list projects")
    listing.add_argument("--show-deleted", action="store_true", help="include deleted ones")
    listing.add_argument("--page-size", type=types.positive, default=100, help="per call")
    update = _leaf(sub, "update", commands.projects_update, change, "change only the fields given")
    update.add_argument("project_id", metavar="ID", type=types.project_id)
    update.add_argument("--display-name")
    _add_settings(update)
    delete = _leaf(
        sub,
        "delete",
        commands.projects_delete,
        change,
        "delete a project: its keys stop at once, its images are purged after the retention",
    )
    delete.add_argument("project_id", metavar="ID", type=types.project_id)
    purge = _leaf(
        sub,
        "purge",
        commands.projects_purge,
        [p["out"], p["db"], p["change"]],
        "purge a deleted project now: its images, keys and identities (a job the processor "
        "runs; shows its progress)",
    )
    purge.add_argument("project_id", metavar="ID", type=types.project_id)
    purge.add_argument("--no-wait", action="store_true", help="queue the job and return")


def _add_jobs(top: Group, p: Parents) -> None:
    group = top.add_parser("jobs", help="long work queued for the processor")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _leaf(sub, "list", commands.jobs_list, [p["out"], p["db"]], "newest first")
    listing.add_argument("--limit", type=types.positive, default=20)


def _add_backfill(top: Group, p: Parents) -> None:
    backfill = _leaf(
        top,
        "backfill",
        commands.backfill,
        [p["out"], p["db"], p["change"]],
        "render a project's images for its current variant profile (a job the processor "
        "runs, rate-limited; shows its progress and the counts at the end)",
    )
    backfill.add_argument("--project", required=True, metavar="PROJECT", type=types.project_id)
    backfill.add_argument("--no-wait", action="store_true", help="start the job and return")


def _add_reprocess(top: Group, p: Parents) -> None:
    reprocess = _leaf(
        top,
        "reprocess",
        commands.reprocess,
        [p["out"], p["db"], p["change"]],
        "run failed uploads again under the same image ids, from the bytes kept for a "
        "failure that may not be the file's fault (CPU_LIMIT, PROCESSING_TIMEOUT, "
        "MEMORY_LIMIT, RETRIES_EXHAUSTED); audited",
    )
    reprocess.add_argument("image_ids", metavar="IMAGE_ID", nargs="*", type=types.image_id)
    reprocess.add_argument(
        "--project", metavar="PROJECT", type=types.project_id, help="the images' project"
    )
    reprocess.add_argument(
        "--all-retained",
        action="store_true",
        help="every FAILED image of --project whose bytes are still kept",
    )
    reprocess.add_argument("--no-wait", action="store_true", help="queue the copies and return")


def _add_reconcile(top: Group, p: Parents) -> None:
    reconcile = _leaf(
        top,
        "reconcile",
        reconciles.reconcile,
        [p["out"], p["db"], p["change"]],
        "compare the bucket with the database (a job the processor runs with its reconciler; "
        "shows its progress, then what it found): brings lost originals back from S3 "
        "versioning, renders lost variants again, reports orphans; audited",
    )
    reconcile.add_argument(
        "--remove-orphans",
        action="store_true",
        help="also remove orphans older than the processor's PROCESSOR_RECONCILE_GRACE_SECONDS "
        "(otherwise they are only reported)",
    )
    reconcile.add_argument("--no-wait", action="store_true", help="queue the job and return")


def _add_similar(top: Group, p: Parents) -> None:
    similar = _leaf(
        top,
        "similar",
        commands.similar,
        [p["out"], p["db"]],
        "list the READY images of an image's project that look like it: perceptual hashes "
        "(pHash, 64 bits) within --max-distance bits, nearest first",
    )
    similar.add_argument("image_id", metavar="IMAGE_ID", type=types.image_id)
    similar.add_argument(
        "--max-distance",
        type=types.distance,
        default=8,
        metavar="N",
        help="largest Hamming distance, 0-64 (default 8). Every image within 3 bits is found; "
        "one 4-N bits away only if one of the hash's four 16-bit bands is unchanged (the "
        "index finds images by a shared band)",
    )
    similar.add_argument(
        "--limit", type=types.positive, default=20, metavar="N", help="most images (default 20)"
    )


def _add_takedown(top: Group, p: Parents) -> None:
    block = _leaf(
        top,
        "block",
        commands.block,
        [p["out"], p["db"], p["change"]],
        "take a file down everywhere: every READY image of its bytes, in every project, turns "
        "BLOCKED; its content is deleted (every S3 version) and invalidated on CloudFront (a "
        "job the processor runs); future uploads of the bytes end FAILED (BLOCKED); audited",
    )
    block.add_argument(
        "target", metavar="SHA256|IMAGE_ID", help="the file's SHA-256, or the id of an image of it"
    )
    block.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    block.add_argument("--no-wait", action="store_true", help="queue the deletion and return")
    unblock = _leaf(
        top,
        "unblock",
        commands.unblock,
        [p["out"], p["db"], p["change"]],
        "accept uploads of blocked bytes again (images already BLOCKED stay so); audited",
    )
    unblock.add_argument("target", metavar="SHA256|IMAGE_ID")
    unblock.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    listed = _leaf(
        top,
        "blocked",
        commands.blocked,
        [p["out"], p["db"]],
        "list the blocked content: SHA-256, when, by whom and why, newest first",
    )
    listed.add_argument(
        "--limit", type=types.positive, default=100, metavar="N", help="most rows (default 100)"
    )


def _add_keys(top: Group, p: Parents) -> None:
    group = top.add_parser("keys", help="create, list and revoke API keys")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    change = [p["out"], p["rpc"], p["change"]]
    create = _leaf(
        sub, "create", commands.keys_create, change, "create an API key; its secret shows once"
    )
    create.add_argument("project_id", metavar="PROJECT", type=types.project_id)
    create.add_argument("--display-name", required=True)
    create.add_argument(
        "--scopes",
        required=True,
        type=types.scopes,
        help="comma-separated: images.create, images.read, images.delete, projects.admin",
    )
    for rpc_class in RPC_CLASSES:
        create.add_argument(
            f"--rate-{rpc_class}-per-minute",
            type=types.count,
            default=0,
            metavar="N",
            help=f"the key's own limit on {rpc_class} calls (0: only the project's applies)",
        )
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument(
        "--expire-time", type=types.expire_time, help="ISO 8601, e.g. 2030-01-31T00:00:00Z"
    )
    expiry.add_argument(
        "--expires-in", type=types.expires_in, dest="expire_time", help="e.g. 12h, 30d, 4w"
    )
    listing = _leaf(
        sub, "list", commands.keys_list, [p["out"], p["rpc"]], "list a project's API keys"
    )
    listing.add_argument("project_id", metavar="PROJECT", type=types.project_id)
    revoke = _leaf(sub, "revoke", commands.keys_revoke, change, "revoke an API key")
    revoke.add_argument("project_id", metavar="PROJECT", type=types.project_id)
    revoke.add_argument("key_id", metavar="KEY_ID")


def _add_identities(top: Group, p: Parents) -> None:
    group = top.add_parser("identities", help="map mTLS client identities to projects")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    change = [p["out"], p["db"], p["change"]]
    mapping = _leaf(
        sub,
        "map",
        commands.identities_map,
        change,
        "map a client identity (SPIFFE id or CN) to a project and scopes",
    )
    mapping.add_argument("identity", metavar="IDENTITY", type=types.identity)
    mapping.add_argument("--project", required=True, type=types.project_id)
    mapping.add_argument("--scopes", required=True, type=types.scopes, help="comma-separated")
    revoke = _leaf(sub, "revoke", commands.identities_revoke, change, "revoke an identity")
    revoke.add_argument("identity", metavar="IDENTITY", type=types.identity)
    listing = _leaf(
        sub, "list", commands.identities_list, [p["out"], p["db"]], "list mapped identities"
    )
    listing.add_argument("--project", type=types.project_id)


def _add_audit_and_migrate(top: Group, p: Parents) -> None:
    audit = _leaf(
        top, "audit", commands.audit, [p["out"], p["db"]], "show the audit trail, newest first"
    )
    audit.add_argument("--project", type=types.project_id)
    audit.add_argument("--limit", type=types.positive, default=50)
    migrate = _leaf(
        top,
        "migrate",
        commands.migrate,
        [p["out"], p["db"], p["change"]],
        "apply pending database migrations (ACTION up, the default), or show them (status)",
    )
    # An action's own options default to SUPPRESS, so `migrate --dry-run up` keeps the flag.
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--database-url", default=argparse.SUPPRESS, help="(default: $DATABASE_URL)")
    change = argparse.ArgumentParser(add_help=False)
    change.add_argument(
        "--dry-run", action="store_true", default=argparse.SUPPRESS, help="show, change nothing"
    )
    sub = migrate.add_subparsers(dest="action", metavar="ACTION")
    text = "apply pending database migrations (what bare `imagery-admin migrate` does)"
    _leaf(sub, "up", commands.migrate, [p["out"], db, change], text)
    status = _leaf(
        sub, "status", commands.migrate_status, [p["out"], db], "applied and pending migrations"
    )
    status.description = migrations.STATUS_ABOUT
    status.add_argument(
        "--wait",
        type=types.count,
        default=0,
        metavar="SECONDS",
        help="poll until up to date, at most this long (exit 3 if still pending)",
    )


def _add_dlq(top: Group, p: Parents) -> None:
    group = top.add_parser("dlq", help="list and redrive the dead-letter queue's messages")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _leaf(
        sub, "list", commands.dlq_list, [p["out"], p["db"]], "messages waiting, left in place"
    )
    listing.description = dlq.LIST_ABOUT
    listing.add_argument(
        "--limit", type=types.positive, default=100, metavar="N", help="read at most N"
    )
    redrive = _leaf(
        sub,
        "redrive",
        commands.dlq_redrive,
        [p["out"], p["db"], p["change"]],
        "send dead letters back to the main queue (audited)",
    )
    redrive.description = dlq.REDRIVE_ABOUT
    redrive.add_argument(
        "--limit", type=types.positive, metavar="N", help="move at most N (default: all)"
    )
    redrive.add_argument(
        "--image",
        dest="images",
        metavar="ID",
        nargs="+",
        action="extend",
        type=types.image_id,
        default=[],
        help="only messages naming one of these images",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
    except commands.UsageError as exc:
        args.parser.error(str(exc))
    except (CliError, ConfigError) as exc:
        print(f"imagery-admin: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("imagery-admin: interrupted.", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
