"""`make run`: the whole imagery stack on this machine, stopped cleanly with Ctrl-C.

Embedded Postgres (unless DATABASE_URL is set), the local S3+SQS endpoint (unless
AWS_ENDPOINT_URL is set), migrations, then each service as its own process. Everything it
starts is recorded in .devstack/pids, so a run after a crash first stops the leftovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

from imagery.common.db.migrate import MigrationError, migrate
from imagery.devstack.aws import (
    LOCAL_CREDENTIALS,
    create_distribution,
    provision,
    start_moto,
    write_env_file,
)
from imagery.devstack.credentials import ADMIN_KEY, API_KEY, ensure_local_keys
from imagery.devstack.keys import LOCAL_KEY_PAIR_ID, ensure_key_pair
from imagery.devstack.postgres import EmbeddedPostgres
from imagery.devstack.procs import port_open, reap_stale
from imagery.devstack.services import ServiceProcess

ROOT = Path(os.environ.get("DEVSTACK_DIR", ".devstack")).resolve()
# The local S3 keeps nothing between runs, so by default neither does Postgres: a database
# whose images have lost their objects would answer READY with URLs that 404.
KEEP_DATA = os.environ.get("DEVSTACK_KEEP_DATA", "") not in ("", "0")
PG_PORT = int(os.environ.get("DEVSTACK_PG_PORT", "54329"))
AWS_PORT = int(os.environ.get("DEVSTACK_AWS_PORT", "4566"))
EDGE_PORT = int(os.environ.get("DEVSTACK_EDGE_PORT", "4580"))
PORTS = {"upload": 50051, "delivery": 50052, "processor": 50053}
METRICS_PORTS = {"upload": 9461, "delivery": 9462, "processor": 9463}


def _check_port_free(port: int, what: str) -> None:
    if port_open(port):
        sys.exit(
            f"port {port} ({what}) is in use by another program: "
            "stop it, then run `make run` again."
        )


def main() -> int:
    pid_dir, logs = ROOT / "pids", ROOT / "logs"
    if stopped := reap_stale(pid_dir):
        print(f"stopped {len(stopped)} process(es) left over from an earlier run")
    logs.mkdir(parents=True, exist_ok=True)
    pid_dir.mkdir(parents=True, exist_ok=True)
    metrics = {f"{name} metrics": port for name, port in METRICS_PORTS.items()}
    for name, port in {**PORTS, **metrics, "CloudFront stand-in": EDGE_PORT}.items():
        _check_port_free(port, name)
    cleanup: list[tuple[str, object]] = []
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        env = _start_infrastructure(pid_dir, logs, cleanup)
        services = [
            ServiceProcess(
                name,
                f"imagery.{name}",
                port,
                logs / f"{name}.log",
                {**env, "METRICS_PORT": str(METRICS_PORTS[name])},
            )
            for name, port in PORTS.items()
        ]
        services.append(
            ServiceProcess(
                "edge",
                "imagery.devstack.edge",
                EDGE_PORT,
                logs / "edge.log",
                {**env, "EDGE_PORT": str(EDGE_PORT)},
                grpc_health=False,
            )
        )
        for service in services:
            service.start(pid_dir)
            cleanup.append((service.name, service))
        for service in services:
            service.wait_ready()
        keys = ensure_local_keys(env["DATABASE_URL"], ROOT / "keys.json")
        write_env_file(
            ROOT / "env",
            {
                **env,
                **{f"{n.upper()}_ADDR": f"127.0.0.1:{p}" for n, p in PORTS.items()},
                **keys,
            },
        )
        _print_guide(keys)
        while not stop.wait(0.5):
            for service in services:
                if service.proc is not None and service.proc.poll() is not None:
                    print(
                        f"{service.name} exited with {service.proc.returncode}: "
                        f"see {service.log_path}"
                    )
                    stop.set()
        return 0
    finally:
        print("\nstopping the local stack...")
        for name, thing in reversed(cleanup):
            with contextlib.suppress(Exception):
                thing.stop()  # type: ignore[attr-defined]
                print(f"  stopped {name}")
        for pid_file in pid_dir.glob("*.pid"):
            pid_file.unlink(missing_ok=True)


def _pg_data_dir() -> Path:
    """Kept data lives in .devstack/postgres, or (run as root, when Postgres runs as its own
    user and may not reach the checkout) in a directory of the temp dir named after it. A
    fresh run gets a new temporary directory, removed when the stack stops."""
    if not KEEP_DATA:
        return Path(tempfile.mkdtemp(prefix="imagery-devstack-pg-")) / "data"
    if os.geteuid() != 0:
        return ROOT / "postgres"
    digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"imagery-devstack-pg-{digest}" / "data"


class _Removed:
    """A directory removed when the stack stops."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def stop(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _start_infrastructure(
    pid_dir: Path, logs: Path, cleanup: list[tuple[str, object]]
) -> dict[str, str]:
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        _check_port_free(PG_PORT, "embedded Postgres")
        pg = EmbeddedPostgres(_pg_data_dir(), PG_PORT)
        if not KEEP_DATA:  # stops last: after Postgres, which stops before it
            cleanup.append(("fresh database", _Removed(pg.data_dir.parent)))
        pg.start()
        cleanup.append(("postgres", pg))
        database_url = pg.create_database("imagery")
    try:
        applied = asyncio.run(migrate(database_url))
    except MigrationError as exc:
        raise SystemExit(
            f"cannot migrate the local database: {exc} "
            "For the local stack, `make clean` resets its data (.devstack/)."
        ) from None
    print(f"postgres  {database_url}  (migrations applied: {len(applied)})")
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        _check_port_free(AWS_PORT, "local S3/SQS")
        moto = start_moto(AWS_PORT, logs / "s3-sqs.log")
        cleanup.append(("local S3/SQS", _Proc(moto)))
        (pid_dir / "s3-sqs.pid").write_text(str(moto.pid))
        endpoint = f"http://127.0.0.1:{AWS_PORT}"
    os.environ.update({k: os.environ.get(k, v) for k, v in LOCAL_CREDENTIALS.items()})
    aws = provision(
        endpoint,
        region=os.environ.get("AWS_REGION", "us-east-1"),
        retained_days=int(os.environ.get("RETAINED_FAILED_DAYS", "7")),
    )
    print(f"S3+SQS    {endpoint}  bucket {aws.bucket}, queue {aws.queue_url}")
    return {
        "DATABASE_URL": database_url,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": aws.region,
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
        "S3_BUCKET": aws.bucket,
        "SQS_QUEUE_URL": aws.queue_url,
        "SQS_DLQ_URL": aws.dlq_url,
        # Image events: the processor publishes to the topic; read them from the queue.
        "EVENTS_TOPIC_ARN": aws.events_topic_arn,
        "EVENTS_QUEUE_URL": aws.events_queue_url,
        # What takedowns invalidate (moto records it; the local edge caches nothing).
        "CLOUDFRONT_DISTRIBUTION_ID": create_distribution(endpoint, aws.bucket, region=aws.region),
        "LOG_FORMAT": os.environ.get("LOG_FORMAT", "text"),
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "info"),
        # A kept database meets an empty local S3: find what lost its objects at once.
        "PROCESSOR_RECONCILE_AT_START": "on" if KEEP_DATA else "off",
        **_cloudfront_settings(),
    }


def _cloudfront_settings() -> dict[str, str]:
    kind = os.environ.get("DEVSTACK_KEY_TYPE", "ecdsa").lower()
    private_file, public_file = ensure_key_pair(ROOT / "cloudfront", kind)
    return {
        "CLOUDFRONT_DOMAIN": f"http://127.0.0.1:{EDGE_PORT}",
        "CLOUDFRONT_KEY_PAIR_ID": LOCAL_KEY_PAIR_ID,
        "CLOUDFRONT_PRIVATE_KEY_FILE": str(private_file),
        "CLOUDFRONT_PUBLIC_KEY_FILE": str(public_file),
        "CLOUDFRONT_HASH_ALGORITHM": os.environ.get("CLOUDFRONT_HASH_ALGORITHM", "sha1"),
    }


class _Proc:
    def __init__(self, proc: object) -> None:
        self.proc = proc

    def stop(self) -> None:
        self.proc.terminate()  # type: ignore[attr-defined]
        self.proc.wait(10)  # type: ignore[attr-defined]


def _print_guide(keys: dict[str, str]) -> None:
    grpcurl = ".venv/bin/grpcurl"
    auth = f'-H "authorization: Bearer {keys[API_KEY]}"'
    admin = f'-H "authorization: Bearer {keys[ADMIN_KEY]}"'
    print(
        f"""
imagery is running. Settings for scripts: .devstack/env   Logs: .devstack/logs/
  upload    127.0.0.1:{PORTS["upload"]}   imagery.v1.UploadService
  delivery  127.0.0.1:{PORTS["delivery"]}   imagery.v1.DeliveryService
  processor 127.0.0.1:{PORTS["processor"]}   consumes upload events (gRPC health only)
  edge      http://127.0.0.1:{EDGE_PORT}   local CloudFront stand-in (checks signed URLs)

API keys (also in .devstack/env; shown only here, keep them out of logs):
  IMAGERY_API_KEY    project "default": images.create, images.read, images.delete
  IMAGERY_ADMIN_KEY  operator project: projects.admin (every project) and images.*

Try it (another terminal, in this directory):
  {grpcurl} -plaintext localhost:{PORTS["upload"]} list
  {grpcurl} -plaintext {auth} -d '{{"content_type": "image/png", "file_name": "cat.png"}}' \\
      localhost:{PORTS["upload"]} imagery.v1.UploadService/CreateUploadUrl
  curl -X PUT -H 'Content-Type: image/png' --data-binary @cat.png '<upload_url from the answer>'
  (grpcurl's JSON prints each & of a URL as \\u0026: put & back before using a URL)
  {grpcurl} -plaintext {auth} -d '{{"image_id": "<image_id>"}}' \\
      localhost:{PORTS["delivery"]} imagery.v1.DeliveryService/GetImage
  {grpcurl} -plaintext {auth} -d '{{"image_id": "<image_id>", "variant": "small"}}' \\
      localhost:{PORTS["delivery"]} imagery.v1.DeliveryService/GetDownloadUrl
  {grpcurl} -plaintext {admin} -d '{{"page_size": 10}}' \\
      localhost:{PORTS["upload"]} imagery.v1.ProjectService/ListProjects

Metrics (Prometheus): http://127.0.0.1:9461/metrics (upload), :9462 (delivery), :9463 (processor)
Ctrl-C stops everything.
"""
    )


if __name__ == "__main__":
    sys.exit(main())
