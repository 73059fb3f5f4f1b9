"""Run imagery's service processes: each its own process group, its own log file, its lines
echoed to the console with a prefix, and a readiness wait on its gRPC health."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagery.devstack.procs import port_open, wait_for


def grpc_serving(port: int, service: str = "") -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=0.5
            )
        except grpc.RpcError:
            return False
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


@dataclass
class ServiceProcess:
    name: str
    module: str
    port: int
    log_path: Path
    env: Mapping[str, str]
    echo: IO[str] | None = sys.stdout
    grpc_health: bool = True  # else readiness is the TCP port accepting connections
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _pump_thread: threading.Thread | None = field(default=None, init=False)

    def __enter__(self) -> ServiceProcess:
        """Started (unless it already was) and ready; stopped again on leaving."""
        return self if self.proc is not None else self.start_ready()

    def start_ready(self, timeout: float = 30.0) -> ServiceProcess:
        """Start and wait until ready; a process that never gets ready is stopped again."""
        self.start()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self, pid_dir: Path | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env={**os.environ, **self.env, "GRPC_PORT": str(self.port)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if pid_dir is not None:
            pid_dir.mkdir(parents=True, exist_ok=True)
            (pid_dir / f"{self.name}.pid").write_text(str(self.proc.pid))
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self.proc.stdout as stream, self.log_path.open("ab") as log:
            for line in stream:
                log.write(line)
                log.flush()
                if self.echo is not None:
                    self.echo.write(f"{self.name:>9} | {line.decode(errors='replace')}")
                    self.echo.flush()

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.log_path.read_text()[-1500:] if self.log_path.exists() else ""
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
            return grpc_serving(self.port) if self.grpc_health else port_open(self.port)

        wait_for(ready, f"{self.name} on 127.0.0.1:{self.port}", timeout=timeout, interval=0.1)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (the whole process group), SIGKILL after `timeout`; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._pump_thread is not None:
            self._pump_thread.join(5)
        return self.proc.returncode
