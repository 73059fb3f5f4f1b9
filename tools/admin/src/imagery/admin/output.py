"""What the commands print: JSON with `--json`, else aligned text for people. Every command
builds plain data (dicts, lists, str, int, bool, None) once and renders it one way or the
other; failures are one sentence on stderr (`CliError`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from imagery.common.tenancy import SETTING_NAMES

KEY_WARNING = (
    "Store this key now (in your secret manager): it is shown only this once and cannot be "
    "recovered."
)


class CliError(Exception):
    """A refusal or failure, with the one sentence that tells the operator what to do."""


def emit(
    as_json: bool,
    data: Any,
    human: Callable[[], str],
    stream: TextIO | None = None,
) -> None:
    out = stream or sys.stdout
    if as_json:
        json.dump(data, out, indent=2, sort_keys=False, default=str)
        out.write("\n")
    else:
        out.write(human().rstrip("\n") + "\n")


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def when(value: str | None) -> str:
    """An ISO time from the data, as people read it (UTC, to the second)."""
    if not value:
        return "-"
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [list(headers)] + [["-" if c is None or c == "" else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def value_text(value: object) -> str:
    if value is None:
        return "(default)"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def project_text(project: Mapping[str, Any]) -> str:
    lines = [f"{project['name']}  {project['display_name']!r}"]
    facts = [
        ("operator", "yes" if project["operator"] else "no"),
        ("created", when(project["create_time"])),
        ("updated", when(project["update_time"])),
    ]
    if project["delete_time"]:
        facts += [
            ("deleted", when(project["delete_time"])),
            ("purged", when(project["purge_time"])),
        ]
    width = max(len(k) for k, _ in facts)
    lines += [f"  {k.ljust(width)}  {v}" for k, v in facts]
    chosen = project["settings"]
    effective = project.get("effective_settings") or {}
    rows = [
        (name, value_text(chosen.get(name)), value_text(effective.get(name)) if effective else "")
        for name in SETTING_NAMES
    ]
    lines.append("")
    lines += ["  " + row for row in table(("SETTING", "CHOSEN", "IN FORCE"), rows).splitlines()]
    return "\n".join(lines)


def projects_text(projects: Sequence[Mapping[str, Any]]) -> str:
    if not projects:
        return "No projects."
    rows = [
        (
            p["project_id"],
            p["display_name"],
            "yes" if p["operator"] else "",
            when(p["create_time"]),
            when(p["delete_time"]) if p["delete_time"] else "",
        )
        for p in projects
    ]
    return table(("PROJECT", "DISPLAY NAME", "OPERATOR", "CREATED", "DELETED"), rows)


def usage_text(projects: Sequence[Mapping[str, Any]]) -> str:
    if not projects:
        return "No projects."

    def cell(entry: Mapping[str, int]) -> str:
        if not entry["quota"]:
            return f"{entry['used']} (unlimited)"
        return f"{entry['used']} of {entry['quota']} ({100 * entry['used'] / entry['quota']:.0f}%)"

    rows = [
        (p["project_id"], cell(p["images"]), cell(p["bytes"]), cell(p["uploads_today"]))
        for p in projects
    ]
    return table(("PROJECT", "IMAGES", "BYTES", "UPLOADS TODAY (UTC)"), rows)


def keys_text(keys: Sequence[Mapping[str, Any]]) -> str:
    if not keys:
        return "No API keys."
    rows = [
        (
            k["key_id"],
            k["display_name"],
            ",".join(k["scopes"]),
            when(k["create_time"]),
            when(k["expire_time"]) if k["expire_time"] else "never",
            when(k["revoke_time"]) if k["revoke_time"] else "",
            when(k["last_use_time"]) if k["last_use_time"] else "",
            k["creator"],
        )
        for k in keys
    ]
    headers = ("KEY ID", "DISPLAY NAME", "SCOPES", "CREATED", "EXPIRES", "REVOKED", "LAST USED")
    return table((*headers, "CREATOR"), rows)


def new_key_text(key: Mapping[str, Any], secret: str) -> str:
    expires = when(key["expire_time"]) if key["expire_time"] else "never"
    return (
        f"Created API key {key['name']} ({key['display_name']!r}), scopes "
        f"{', '.join(key['scopes'])}, expires {expires}.\n\n    {secret}\n\n{KEY_WARNING}"
    )


def identities_text(identities: Sequence[Mapping[str, Any]]) -> str:
    if not identities:
        return "No mapped identities."
    rows = [
        (i["identity"], i["project_id"], ",".join(i["scopes"]), when(i["revoke_time"]))
        for i in identities
    ]
    return table(("IDENTITY", "PROJECT", "SCOPES", "REVOKED"), rows)


def audit_text(events: Sequence[Mapping[str, Any]]) -> str:
    if not events:
        return "No audit events."
    rows = [
        (when(e["time"]), e["project_id"], e["principal"], e["action"], e["target"], e["outcome"])
        for e in events
    ]
    return table(("TIME", "PROJECT", "PRINCIPAL", "ACTION", "TARGET", "OUTCOME"), rows)


def bootstrap_text(data: Mapping[str, Any]) -> str:
    if data.get("dry_run"):
        return dry_run_text(data["actions"])
    project = data["project"]
    lines = [
        f"Created the operator project {project['name']} ({project['display_name']!r})."
        if data["created_project"]
        else f"The operator project {project['name']} exists already; it is kept as it is."
    ]
    for key in data["keys"]:
        lines += [
            f"Created API key {key['name']} ({key['display_name']!r}), scopes "
            f"{', '.join(key['scopes'])}:",
            "",
            f"    {key['key']}",
            "",
        ]
    lines.append(KEY_WARNING)
    return "\n".join(lines)


def dry_run_text(actions: Sequence[str]) -> str:
    return "Dry run, nothing changed. This would:\n" + "\n".join(f"  - {a}" for a in actions)


def settings_phrase(settings: Mapping[str, Any]) -> str:
    if not settings:
        return "the deployment's default settings"
    return ", ".join(f"{k}={value_text(v)}" for k, v in settings.items())
