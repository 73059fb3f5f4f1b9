"""imagery-admin as an operator runs it: the installed command, in a subprocess, against a real
migrated Postgres and, for the project and key commands, a real upload server on a socket."""

from __future__ import annotations

import asyncio
import getpass
import ipaddress
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from imagery.common.api_keys import matches
from imagery.common.config import AwsSettings, Settings
from imagery.common.ids import new_image_id
from imagery.devstack.aws import AwsResources
from imagery.upload.bootstrap import build_server
from imagery.upload.config import UploadSettings

pytestmark = pytest.mark.integration
ADMIN = Path(sys.executable).with_name("imagery-admin")  # the console script of the workspace
USER = f"cli:{getpass.getuser()}"


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def admin(*args: str, database_url: str | None = None, **env: str) -> Run:
    """Run the command; async, so an in-process server on this loop keeps answering."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "IMAGERY_ADDRESS", "IMAGERY_ADMIN_KEY")
    }
    if database_url is not None:
        environ["DATABASE_URL"] = database_url
    process = await asyncio.create_subprocess_exec(
        str(ADMIN),
        *args,
        env={**environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


async def one_row(pool: asyncpg.Pool, query: str, *args: object) -> asyncpg.Record:
    row = await pool.fetchrow(query, *args)
    assert row is not None
    return row


async def counts(pool: asyncpg.Pool) -> dict[str, int]:
    row = await one_row(
        pool,
        """SELECT (SELECT count(*) FROM projects) AS projects,
                  (SELECT count(*) FROM api_keys) AS api_keys,
                  (SELECT count(*) FROM client_identities) AS client_identities,
                  (SELECT count(*) FROM audit_events) AS audit_events""",
    )
    return dict(row)


def one_line(run: Run) -> str:
    """A refusal is one sentence on stderr, and nothing on stdout."""
    assert run.out == "", run.out
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run.err
    return lines[0]


# -- bootstrap, straight against Postgres ---------------------------------------------------


async def test_bootstrap_creates_the_operator_project_and_a_working_admin_key(
    database_url: str, pool: asyncpg.Pool
) -> None:
    run = await admin("bootstrap", "--json", database_url=database_url)
    assert run.code == 0, run.err
    result = run.json()
    assert result["created_project"] is True
    assert result["project"]["project_id"] == "operator"
    assert result["project"]["display_name"] == "Operators"
    assert result["project"]["operator"] is True
    (key,) = result["keys"]
    assert key["scopes"] == ["images.create", "images.delete", "images.read", "projects.admin"]

    project = await one_row(pool, "SELECT * FROM projects WHERE id = 'operator'")
    assert project["operator"] is True and project["display_name"] == "Operators"
    assert len(project["content_scope"]) == 32 and int(project["content_scope"], 16) >= 0
    row = await one_row(pool, "SELECT * FROM api_keys WHERE id = $1", key["key_id"])
    assert row["project_id"] == "operator"
    assert matches(key["key"], bytes(row["secret_hash"]))
    assert sorted(row["scopes"]) == key["scopes"]
    assert row["created_by"] == USER and row["revoked_at"] is None


async def test_bootstrap_prints_the_key_once_with_a_warning_and_refuses_a_second_time(
    database_url: str, pool: asyncpg.Pool
) -> None:
    first = await admin("bootstrap", database_url=database_url)
    assert first.code == 0, first.err
    (secret,) = [w for w in first.out.split() if w.startswith("imk_")]
    assert "Created the operator project projects/operator" in first.out
    assert "Store this key now" in first.out
    before = await counts(pool)

    again = await admin("bootstrap", database_url=database_url)

    assert again.code == 1
    assert "keys create" in one_line(again)
    assert secret not in again.err
    assert await counts(pool) == before


async def test_two_bootstraps_at_once_make_one_admin_key(
    database_url: str, pool: asyncpg.Pool
) -> None:
    runs = await asyncio.gather(*(admin("bootstrap", database_url=database_url) for _ in range(2)))
    assert sorted(r.code for r in runs) == [0, 1], [r.err for r in runs]
    (refused,) = [r for r in runs if r.code == 1]
    assert "working admin key" in one_line(refused)
    assert await pool.fetchval("SELECT count(*) FROM api_keys") == 1


async def test_bootstrap_is_the_way_back_in_once_every_admin_key_is_revoked(
    database_url: str, pool: asyncpg.Pool
) -> None:
    first = await admin("bootstrap", "--json", database_url=database_url)
    assert first.code == 0, first.err
    await pool.execute("UPDATE api_keys SET revoked_at = now()")
    again = await admin("bootstrap", "--json", database_url=database_url)
    assert again.code == 0, again.err
    working = await pool.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
    assert working == 1


async def test_bootstrap_with_a_project_key_makes_an_ordinary_key_there(
    database_url: str, pool: asyncpg.Pool
) -> None:
    run = await admin("bootstrap", "--project-key", "default", "--json", database_url=database_url)
    assert run.code == 0, run.err
    admin_key, project_key = run.json()["keys"]
    assert admin_key["project_id"] == "operator"
    assert project_key["project_id"] == "default"
    assert project_key["scopes"] == ["images.create", "images.delete", "images.read"]
    row = await one_row(pool, "SELECT * FROM api_keys WHERE id = $1", project_key["key_id"])
    assert row["project_id"] == "default" and matches(project_key["key"], row["secret_hash"])


async def test_bootstrap_refuses_an_unknown_project_key_project_and_changes_nothing(
    database_url: str, pool: asyncpg.Pool
) -> None:
    before = await counts(pool)
    run = await admin("bootstrap", "--project-key", "nowhere", database_url=database_url)
    assert run.code == 1
    assert "'nowhere' does not exist" in one_line(run)
    assert await counts(pool) == before


async def test_dry_runs_change_nothing(database_url: str, pool: asyncpg.Pool) -> None:
    before = await counts(pool)

    boot = await admin(
        "bootstrap", "--dry-run", "--project-key", "default", database_url=database_url
    )
    planned = await admin("bootstrap", "--dry-run", "--json", database_url=database_url)
    mapped = await admin(
        "identities",
        "map",
        "spiffe://example.org/ns/shop/sa/web",
        "--project",
        "default",
        "--scopes",
        "images.read",
        "--dry-run",
        database_url=database_url,
    )

    assert boot.code == 0 and planned.code == 0 and mapped.code == 0, boot.err + mapped.err
    assert "Dry run, nothing changed" in boot.out
    assert "create the operator project projects/operator" in boot.out
    assert "create a key in projects/default" in boot.out
    assert "imk_" not in boot.out
    assert planned.json()["dry_run"] is True
    assert "Dry run, nothing changed" in mapped.out
    assert await counts(pool) == before


# -- identities and the audit trail ----------------------------------------------------------


async def test_identities_map_list_and_revoke(database_url: str, pool: asyncpg.Pool) -> None:
    identity = "spiffe://example.org/ns/shop/sa/web"
    mapped = await admin(
        "identities",
        "map",
        identity,
        "--project",
        "default",
        "--scopes",
        "images.read,images.create",
        database_url=database_url,
    )
    assert mapped.code == 0, mapped.err
    assert f"Mapped identity {identity!r} to projects/default" in mapped.out

    listed = (await admin("identities", "list", "--json", database_url=database_url)).json()
    assert listed == [
        {
            "identity": identity,
            "project_id": "default",
            "scopes": ["images.create", "images.read"],
            "revoke_time": None,
        }
    ]
    other = await admin("identities", "list", "--project", "operator", database_url=database_url)
    assert other.out.strip() == "No mapped identities."
    table = await admin("identities", "list", database_url=database_url)
    assert table.out.splitlines()[0].split() == ["IDENTITY", "PROJECT", "SCOPES", "REVOKED"]
    assert identity in table.out

    revoked = await admin("identities", "revoke", identity, database_url=database_url)
    assert revoked.code == 0, revoked.err
    row = await one_row(pool, "SELECT * FROM client_identities WHERE identity = $1", identity)
    assert row["revoked_at"] is not None and row["created_by"] == USER
    listed = (await admin("identities", "list", "--json", database_url=database_url)).json()
    assert listed[0]["revoke_time"] is not None

    unknown = await admin("identities", "revoke", "CN=nobody", database_url=database_url)
    assert unknown.code == 1 and "identities list" in one_line(unknown)
    nowhere = await admin(
        "identities",
        "map",
        "CN=someone",
        "--project",
        "nowhere",
        "--scopes",
        "images.read",
        database_url=database_url,
    )
    assert nowhere.code == 1 and "'nowhere' does not exist" in one_line(nowhere)


async def test_audit_lists_the_bootstrap_as_the_os_user(database_url: str) -> None:
    assert (await admin("bootstrap", database_url=database_url)).code == 0

    events = (await admin("audit", "--json", database_url=database_url)).json()
    table = await admin("audit", "--project", "operator", database_url=database_url)

    assert {(e["principal"], e["action"], e["project_id"]) for e in events} == {
        (USER, "project.create", "operator"),
        (USER, "api_key.create", "operator"),
    }
    assert all("imk_" not in json.dumps(e) for e in events)
    header, *rows = table.out.splitlines()
    assert header.split() == ["TIME", "PROJECT", "PRINCIPAL", "ACTION", "TARGET", "OUTCOME"]
    assert len(rows) == 2 and all(USER in r and r.split()[-1] == "ok" for r in rows)
    limited = (await admin("--json", "audit", "--limit", "1", database_url=database_url)).json()
    assert len(limited) == 1


async def test_usage_errors_exit_2(database_url: str) -> None:
    no_database = await admin("audit")
    bad_scope = await admin(
        "identities", "map", "CN=x", "--project", "default", "--scopes", "images.write"
    )
    bad_id = await admin("projects", "get", "Not_A_Project")
    assert (no_database.code, bad_scope.code, bad_id.code) == (2, 2, 2)
    assert "DATABASE_URL" in no_database.err
    assert "images.write" in bad_scope.err


async def test_migrate_reports_an_up_to_date_database(database_url: str) -> None:
    dry = await admin("migrate", "--dry-run", "--json", database_url=database_url)
    real = await admin("migrate", database_url=database_url)
    assert dry.json() == {"dry_run": True, "pending": []}
    assert real.code == 0 and "up to date" in real.out


# -- projects and keys, through ProjectService ------------------------------------------------


@pytest.fixture
async def upload_address(settings: Settings) -> AsyncIterator[str]:
    async with AsyncExitStack() as stack:
        server = await build_server(
            UploadSettings(base=settings, project_retention_seconds=86400), stack
        )
        port = await server.start(0, host="127.0.0.1")
        yield f"127.0.0.1:{port}"
        await server.stop()


@pytest.fixture
async def operator_key(database_url: str) -> str:
    run = await admin("bootstrap", "--json", database_url=database_url)
    assert run.code == 0, run.err
    key: str = run.json()["keys"][0]["key"]
    return key


async def test_projects_through_the_cli(
    upload_address: str, operator_key: str, pool: asyncpg.Pool
) -> None:
    env = {"IMAGERY_ADDRESS": upload_address, "IMAGERY_ADMIN_KEY": operator_key}

    dry = await admin("projects", "create", "acme", "--display-name", "Acme", "--dry-run", **env)
    assert dry.code == 0, dry.err
    assert "Dry run" in dry.out
    assert await pool.fetchval("SELECT count(*) FROM projects WHERE id = 'acme'") == 0

    created = await admin(
        "projects",
        "create",
        "acme",
        "--display-name",
        "Acme",
        "--max-upload-bytes",
        "1048576",
        "--content-types",
        "image/png",
        **env,
    )
    assert created.code == 0, created.err
    assert "projects/acme" in created.out and "max_upload_bytes" in created.out
    again = await admin("projects", "create", "acme", "--display-name", "Acme", **env)
    assert again.code == 1 and "PROJECT_ALREADY_EXISTS" in one_line(again)

    got = (await admin("projects", "get", "acme", "--json", **env)).json()
    assert got["display_name"] == "Acme"
    assert got["settings"] == {"content_types": ["image/png"], "max_upload_bytes": 1048576}

    listed = (await admin("projects", "list", "--page-size", "1", "--json", **env)).json()
    assert [p["project_id"] for p in listed] == ["acme", "default", "operator"]

    unchanged = await admin(
        "projects", "update", "acme", "--display-name", "Acme Corp", "--dry-run", **env
    )
    assert unchanged.code == 0 and "from Acme to Acme Corp" in unchanged.out
    updated = await admin(
        "projects",
        "update",
        "acme",
        "--display-name",
        "Acme Corp",
        "--signed-url-ttl-seconds",
        "3600",
        "--json",
        **env,
    )
    assert updated.code == 0, updated.err
    assert updated.json()["display_name"] == "Acme Corp"
    assert updated.json()["settings"] == {
        "content_types": ["image/png"],
        "max_upload_bytes": 1048576,  # not in the update mask: kept
        "signed_url_ttl_seconds": 3600,
    }
    nothing = await admin("projects", "update", "acme", **env)
    assert nothing.code == 2

    deleted = await admin("projects", "delete", "acme", **env)
    assert deleted.code == 0, deleted.err
    assert "Deleted projects/acme" in deleted.out
    row = await one_row(pool, "SELECT deleted_at, purge_time FROM projects WHERE id = 'acme'")
    assert row["deleted_at"] is not None and row["purge_time"] is not None
    live = (await admin("projects", "list", "--json", **env)).json()
    everything = (await admin("projects", "list", "--show-deleted", "--json", **env)).json()
    assert "acme" not in [p["project_id"] for p in live]
    assert "acme" in [p["project_id"] for p in everything]
    table = await admin("projects", "list", "--show-deleted", **env)
    assert table.out.splitlines()[0].split()[:2] == ["PROJECT", "DISPLAY"]


async def test_usage_against_the_quotas(
    upload_address: str, operator_key: str, pool: asyncpg.Pool
) -> None:
    env = {"IMAGERY_ADDRESS": upload_address, "IMAGERY_ADMIN_KEY": operator_key}
    created = await admin(
        "projects", "create", "acme", "--display-name", "Acme", "--quota-images", "4", **env
    )
    assert created.code == 0, created.err
    for status, size in (("ready", 300), ("failed", None), ("pending", None)):
        await pool.execute(
            "INSERT INTO image_records (id, status, content_type, file_name, object_key,"
            " size_bytes, failure_reason, project_id, reserved_bytes)"
            " VALUES ($1, $2, 'image/png', 'a.png', 'uploads/' || $1, $3, $4, 'acme', 1000)",
            new_image_id(),
            status,
            size,
            "CORRUPT" if status == "failed" else None,
        )
    one = await admin("usage", "acme", "--json", **env)
    assert one.code == 0, one.err
    assert one.json() == [
        {
            "project_id": "acme",
            "images": {"used": 2, "quota": 4},
            "bytes": {"used": 1300, "quota": 0},
            "uploads_today": {"used": 3, "quota": 0},
        }
    ]
    every = await admin("usage", **env)
    assert every.code == 0, every.err
    lines = every.out.splitlines()
    assert lines[0].split()[:3] == ["PROJECT", "IMAGES", "BYTES"]
    assert "2 of 4 (50%)   1300 (unlimited)  3 (unlimited)" in lines[1]
    assert [line.split()[0] for line in lines[1:]] == ["acme", "default", "operator"]
    missing = await admin("usage", "nope", **env)
    assert missing.code == 1 and "PROJECT_NOT_FOUND" in one_line(missing)


async def test_keys_through_the_cli(
    upload_address: str, operator_key: str, pool: asyncpg.Pool
) -> None:
    env = {"IMAGERY_ADDRESS": upload_address, "IMAGERY_ADMIN_KEY": operator_key}
    args = ("keys", "create", "default", "--display-name", "ci", "--scopes", "images.read")

    dry = await admin(*args, "--dry-run", **env)
    assert dry.code == 0, dry.err
    assert "Dry run" in dry.out and "imk_" not in dry.out
    assert await pool.fetchval("SELECT count(*) FROM api_keys WHERE project_id = 'default'") == 0

    created = await admin(*args, "--expires-in", "30d", "--json", **env)
    assert created.code == 0, created.err
    made = created.json()
    key_id = made["api_key"]["key_id"]
    row = await one_row(pool, "SELECT * FROM api_keys WHERE id = $1", key_id)
    assert row["project_id"] == "default" and matches(made["key"], row["secret_hash"])
    assert list(row["scopes"]) == ["images.read"]
    in_30_days = datetime.now(UTC) + timedelta(days=30)
    assert abs(row["expire_time"] - in_30_days) < timedelta(minutes=5)

    shown = await admin(
        "keys", "create", "default", "--display-name", "app", "--scopes", "images.create", **env
    )
    assert shown.code == 0, shown.err
    assert "Store this key now" in shown.out and "imk_" in shown.out

    listed = (await admin("keys", "list", "default", "--json", **env)).json()
    assert [k["display_name"] for k in listed] == ["ci", "app"]
    assert all("key" not in k for k in listed)
    table = await admin("keys", "list", "default", **env)
    assert key_id in table.out and "imk_" not in table.out

    planned = await admin("keys", "revoke", "default", key_id, "--dry-run", **env)
    assert planned.code == 0 and "Dry run" in planned.out
    assert await pool.fetchval("SELECT revoked_at FROM api_keys WHERE id = $1", key_id) is None
    revoked = await admin("keys", "revoke", "default", key_id, **env)
    assert revoked.code == 0, revoked.err
    assert f"Revoked API key projects/default/apiKeys/{key_id}" in revoked.out
    assert await pool.fetchval("SELECT revoked_at FROM api_keys WHERE id = $1", key_id)
    unknown = await admin("keys", "revoke", "default", "aaaaaaaaaaaaaaaa", **env)
    assert unknown.code == 1 and "API_KEY_NOT_FOUND" in one_line(unknown)


async def test_rpc_failures_are_one_actionable_line(
    upload_address: str, operator_key: str, database_url: str
) -> None:
    no_key = await admin("projects", "list", "--address", upload_address)
    wrong_key = await admin(
        "projects", "list", "--address", upload_address, "--key", "imk_" + "a" * 16 + "_" + "b" * 43
    )
    unreachable = await admin("projects", "list", "--address", "127.0.0.1:1", "--key", operator_key)
    unknown = await admin(
        "projects", "get", "nowhere", "--address", upload_address, "--key", operator_key
    )

    assert "IMAGERY_ADMIN_KEY" in one_line(no_key) and no_key.code == 1
    assert "INVALID_CREDENTIALS" in one_line(wrong_key) and wrong_key.code == 1
    assert "Cannot reach imagery at 127.0.0.1:1" in one_line(unreachable)
    assert unreachable.code == 1
    assert one_line(unknown).endswith("(PROJECT_NOT_FOUND)") and unknown.code == 1


# -- over mTLS: --tls-ca, --tls-cert and --tls-key, with an identity mapped by the CLI ------


def _certificate(
    subject: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, *, server: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A CA (issuer None), or a server (localhost, 127.0.0.1) or client certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0] if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def _write(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


async def test_projects_over_mtls_as_a_mapped_client_identity(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    ca_cert, ca_key = _certificate("imagery test CA", None, server=False)
    issuer = (ca_cert.subject, ca_key)
    _write(tmp_path, "ca", ca_cert, ca_key)
    _write(tmp_path, "server", *_certificate("localhost", issuer, server=True))
    _write(tmp_path, "client", *_certificate("ops-console", issuer, server=False))
    assert (await admin("bootstrap", database_url=database_url)).code == 0
    mapped = await admin(
        "identities",
        "map",
        "ops-console",
        "--project",
        "operator",
        "--scopes",
        "projects.admin",
        database_url=database_url,
    )
    assert mapped.code == 0, mapped.err
    tls = replace(
        settings,
        tls_cert_file=str(tmp_path / "server.pem"),
        tls_key_file=str(tmp_path / "server.key"),
        tls_client_ca_file=str(tmp_path / "ca.pem"),
    )
    flags = ["--tls-ca", str(tmp_path / "ca.pem")]
    client = ["--tls-cert", str(tmp_path / "client.pem"), "--tls-key", str(tmp_path / "client.key")]
    async with AsyncExitStack() as stack:
        server = await build_server(UploadSettings(base=tls, project_retention_seconds=60), stack)
        port = await server.start(0, host="127.0.0.1")
        address = ["--address", f"localhost:{port}"]

        listed = await admin("projects", "list", "--json", *address, *flags, *client)
        untrusted = await admin("projects", "list", *address, *client)  # no --tls-ca
        plaintext = await admin("projects", "list", *address, "--key", "imk_x")
        no_certificate = await admin("projects", "list", *address, *flags, "--key", "imk_x")
        await server.stop()

    assert listed.code == 0, listed.err
    assert [p["project_id"] for p in listed.json()] == ["default", "operator"]
    for refused in (untrusted, plaintext, no_certificate):
        assert refused.code == 1
        assert one_line(refused).endswith("(UNAVAILABLE)")


# -- long work: a job the processor runs, watched with a progress bar ------------------------


async def test_purge_queues_a_job_the_processor_runs_and_shows_its_progress(
    database_url: str, pool: asyncpg.Pool, aws: AwsResources, aws_settings: AwsSettings
) -> None:
    from imagery.common.aws.clients import s3_client
    from imagery.common.db.projects import PostgresProjects
    from imagery.common.tenancy import Actor, Project, ProjectSettings
    from imagery.devstack.fixtures import seed_ready_images
    from imagery.processor.adapters.admin_jobs import PostgresAdminJobs
    from imagery.processor.adapters.s3 import S3ObjectStore
    from imagery.processor.use_cases.run_admin_jobs import RunAdminJobs

    projects = PostgresProjects(pool)
    await projects.create_project(
        Project("old-team", "Old", ProjectSettings(), "ab" * 16), Actor("cli:test")
    )
    await seed_ready_images(database_url, aws, 5, put_objects=False, project_id="old-team")

    live = await admin("projects", "purge", "old-team", database_url=database_url)
    assert live.code == 1 and "not deleted" in one_line(live)
    await projects.delete_project("old-team", Actor("cli:test"), retention_seconds=86_400)
    dry = await admin("projects", "purge", "old-team", "--dry-run", database_url=database_url)
    assert dry.code == 0 and "5 images" in dry.out
    assert await pool.fetchval("SELECT count(*) FROM admin_jobs") == 0

    async with s3_client(aws_settings) as client:
        processor = RunAdminJobs(PostgresAdminJobs(pool), S3ObjectStore(client, aws.bucket))

        async def a_processor_polls() -> None:
            while not await pool.fetchval("SELECT count(*) FROM admin_jobs"):  # noqa: ASYNC110 - the processor polls Postgres
                await asyncio.sleep(0.05)
            await processor()

        purge, _ = await asyncio.gather(
            admin("projects", "purge", "old-team", "--json", database_url=database_url),
            a_processor_polls(),
        )
    assert purge.code == 0, purge.err
    job = purge.json()
    assert (job["state"], job["total"], job["done"]) == ("done", 5, 5)
    assert "5/5 images" in purge.err, "the progress bar, on stderr"
    assert await pool.fetchval("SELECT count(*) FROM projects WHERE id = 'old-team'") == 0
    listed = await admin("jobs", "list", "--json", database_url=database_url)
    assert [j["state"] for j in listed.json()] == ["done"]
    requested = await pool.fetchval(
        "SELECT principal FROM audit_events WHERE action = 'project.purge_requested'"
    )
    assert requested.startswith("cli:")
