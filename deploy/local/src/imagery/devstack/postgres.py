"""A real PostgreSQL for development and tests, from the `pgserver` wheel's binaries.

We use pgserver only for its bundled server binaries and run them ourselves, so the server
listens on 127.0.0.1:<port> (plain `postgresql://` URLs work everywhere), survives nothing it
should not, and a second start after a crash stops the leftover postmaster first.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

_SYSTEM_USER = "imagerypg"  # postgres refuses to run as root


def _bin_dir() -> Path:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the pgserver package is not installed: run `make setup`.")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                _SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return _SYSTEM_USER


def _reachable_bin_dir(user: str | None) -> Path:
    """The binaries, where `user` can run them. Run as root, the server runs as its own user,
    which may not reach a checkout in a private directory (mktemp -d, /root): the bundled
    installation, with the libraries its RPATH names (`../../../pgserver.libs`), is then
    copied once per pgserver version to a world-readable directory."""
    bundled = _bin_dir()
    if user is None:
        return bundled
    package = bundled.parents[1]  # .../site-packages/pgserver
    version = importlib.metadata.version("pgserver")
    shared = Path(tempfile.gettempdir()) / f"imagery-pgserver-{version}"
    if not (shared / "pgserver" / "pginstall" / "bin" / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix="imagery-pgserver-", dir=shared.parent))
        shutil.copytree(package / "pginstall", staging / "pgserver" / "pginstall", symlinks=True)
        shutil.copytree(package.parent / "pgserver.libs", staging / "pgserver.libs")
        staging.chmod(0o755)
        try:
            staging.rename(shared)
        except OSError:  # another process put it there first
            shutil.rmtree(staging, ignore_errors=True)
    return shared / "pgserver" / "pginstall" / "bin"


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, port: int, *, durable: bool = True) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.durable = durable
        self.log_file = self.data_dir / "postgres.log"
        self._user = _run_as()
        self._bin = _reachable_bin_dir(self._user)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _pg(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self._bin / tool), *args],
            check=check,
            capture_output=True,
            text=True,
            user=self._user,
            cwd="/",
        )

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            shutil.chown(self.data_dir, self._user)
            self.data_dir.parent.chmod(self.data_dir.parent.stat().st_mode | 0o011)
        self.data_dir.chmod(0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            self._pg(
                "initdb",
                "-D",
                str(self.data_dir),
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
                "--no-sync",
            )
        if self._pg("pg_ctl", "-D", str(self.data_dir), "status", check=False).returncode == 0:
            self.stop()  # a leftover postmaster from a crashed run
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        result = self._pg(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
            check=False,
        )
        if result.returncode != 0:
            tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else result.stderr
            raise RuntimeError(f"embedded Postgres did not start on port {self.port}:\n{tail}")
        return self.dsn()

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop", check=False)

    def create_database(self, name: str) -> str:
        result = self._pg(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{name}'",
        )
        if result.stdout.strip() != "1":
            self._pg("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.dsn(name)
