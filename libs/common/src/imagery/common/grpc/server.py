"""gRPC server bootstrap shared by every service: grpc.aio, health (per service and overall),
reflection, the error-mapping edge, a small receive limit, and graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry import metrics

from imagery.common.config import Settings
from imagery.common.errors import ImageryError, ServerBusy
from imagery.common.grpc.auth import (
    HEALTH_PREFIX,
    METHOD_SCOPES,
    REFLECTION_PREFIXES,
    Authenticates,
    authorize,
    peer_identity,
    reset_principal,
    set_principal,
)
from imagery.common.grpc.errors import (
    internal_status,
    report_id,
    status_code_for,
    to_rpc_status,
)
from imagery.common.grpc.rate_limits import RateLimits
from imagery.common.grpc.tls import TlsFiles, server_credentials
from imagery.common.metrics import RPC_SECONDS
from imagery.common.runner import stop_on_signals
from imagery.common.tenancy import Principal

log = logging.getLogger(__name__)

MAX_RECEIVE_MESSAGE_BYTES = 64 * 1024  # requests carry ids and names; images never travel here
VIA_HEADER = "x-imagery-actor"  # imagery-admin sends `cli:<os user>`; audited, not trusted
_QUIET_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


@dataclass(frozen=True, slots=True)
class ServiceRegistration:
    """One gRPC service: its full name (for health and reflection) and how to add it."""

    name: str
    add_to_server: Callable[[grpc.aio.Server], None]


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticates and authorizes the caller (with an `Authenticator`; health is open),
    turns domain errors into rich statuses (the adapters have already turned driver
    failures into `DependencyUnavailable`), hides unknown ones behind INTERNAL, and logs one
    line per RPC with its outcome and duration."""

    def __init__(
        self,
        authenticator: Authenticates | None = None,
        *,
        max_concurrent_rpcs: int | None = None,
        busy_retry_seconds: float = 0.5,
        rate_limits: RateLimits | None = None,
    ) -> None:
        self._auth = authenticator
        self._limits = rate_limits
        self._cap = max_concurrent_rpcs
        self._busy_retry = busy_retry_seconds
        self.in_flight = 0

    async def intercept_service(  # type: ignore[override]  # grpc: None means "no such method"
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary is None:
            if method.startswith((HEALTH_PREFIX, *REFLECTION_PREFIXES)):
                return handler  # health's Watch and reflection: always open
            if handler.unary_stream is None:  # client streaming: nothing serves it yet
                return handler if self._auth is None else None  # None: UNIMPLEMENTED
            return grpc.unary_stream_rpc_method_handler(
                self._guard_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        behavior = handler.unary_unary
        health = method.startswith(HEALTH_PREFIX)
        auth = None if health else self._auth
        cap = None if health else self._cap

        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            counted = False
            try:
                if cap is not None:  # health is never refused
                    if self.in_flight >= cap:
                        raise ServerBusy(cap, self._busy_retry)
                    self.in_flight += 1
                    counted = True
                if auth is None:
                    return await behavior(request, context)  # type: ignore[arg-type]
                token = set_principal(await self._admit(method, context, auth))
                try:
                    return await behavior(request, context)  # type: ignore[arg-type]
                finally:
                    reset_principal(token)
            except ImageryError as exc:
                code = status_code_for(exc)
                await _abort(context, method, exc, code)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                code = context.code() or grpc.StatusCode.CANCELLED
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                request_id = report_id()  # logged with the cause; the caller reports it
                log.exception(
                    "rpc failed with an unexpected error",
                    extra={"rpc": method, "request_id": request_id},
                )
                await _abort_internal(context, request_id)
            finally:
                if counted:
                    self.in_flight -= 1
                _log_rpc(method, code, started)

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _guard_stream(
        self, method: str, behavior: Callable[..., Any]
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncGenerator[Any, None]]:
        """A server-streaming method at the same edge as a unary one, but outside the
        concurrent-call cap: a stream may stay open for minutes (its service caps how many
        it serves), and counting it would starve the unary calls. An async generator, as
        gRPC and its OpenTelemetry instrumentation expect of a streaming handler."""
        auth = self._auth

        async def guarded(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncGenerator[Any, None]:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                if auth is not None:  # the RPC's own task: the principal goes with its context
                    set_principal(await self._admit(method, context, auth))
                async with contextlib.aclosing(_responses(behavior, request, context)) as out:
                    async for response in out:
                        yield response
            except ImageryError as exc:
                code = status_code_for(exc)
                await _abort(context, method, exc, code)
            except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit):
                code = context.code() or grpc.StatusCode.CANCELLED
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                request_id = report_id()  # logged with the cause; the caller reports it
                log.exception(
                    "rpc failed with an unexpected error",
                    extra={"rpc": method, "request_id": request_id},
                )
                await _abort_internal(context, request_id)
            finally:
                _log_rpc(method, code, started)

        return guarded

    async def _admit(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], auth: Authenticates
    ) -> Principal:
        """The caller: authenticated, allowed `method`, and within its rate limits."""
        metadata = _authorization(context)
        principal = await auth.authenticate(metadata, lambda: peer_identity(context.auth_context()))
        authorize(principal, method)
        if self._limits is not None:
            await self._limits.check(principal, method)
        if VIA_HEADER in metadata:
            principal = dataclasses.replace(principal, via=metadata[VIA_HEADER][:100])
        return principal


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any],
    method: str,
    exc: ImageryError,
    code: grpc.StatusCode,
) -> None:
    """End the call with the error's rich status (raises AbortError)."""
    request_id = None
    if code is grpc.StatusCode.INTERNAL:
        request_id = report_id()
        log.error("rpc failed", exc_info=exc, extra={"rpc": method, "request_id": request_id})
    elif code is grpc.StatusCode.UNAVAILABLE:
        cause = exc.__cause__ or exc
        log.warning(
            "rpc failed: a dependency is unavailable",
            extra={"rpc": method, "error": f"{type(cause).__name__}: {cause}"},
        )
    status = to_rpc_status(exc, request_id=request_id)
    await context.abort(status.code, status.details, status.trailing_metadata)


async def _abort_internal(context: grpc.aio.ServicerContext[Any, Any], request_id: str) -> None:
    """End the call INTERNAL with a generic message and the id to report: the cause is logged
    with that id, never sent."""
    status = internal_status(request_id)
    await context.abort(status.code, status.details, status.trailing_metadata)


async def _responses(
    behavior: Callable[..., Any], request: Any, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncGenerator[Any, None]:
    """A streaming servicer method's responses. An async generator is closed whatever ends
    the stream, so its `finally` blocks run then, not whenever it is garbage collected; a
    method that writes its own responses yields none here."""
    if not inspect.isasyncgenfunction(behavior):
        await behavior(request, context)
        return
    async with contextlib.aclosing(behavior(request, context)) as responses:
        async for response in responses:
            yield response


def _authorization(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    """The metadata authentication reads (gRPC lower-cases keys)."""
    return {
        key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)
    }


_RPC_DURATION = metrics.get_meter("imagery.grpc").create_histogram(
    "rpc.server.call.duration",
    unit="s",
    description="Server-side duration of each RPC (for a stream, until it ends)",
    explicit_bucket_boundaries_advisory=RPC_SECONDS,
)


def _log_rpc(method: str, code: Any, started: float) -> None:
    quiet = method.startswith(_QUIET_PREFIXES)
    level = logging.DEBUG if quiet else logging.INFO
    name = code.name if isinstance(code, grpc.StatusCode) else str(code)
    if not quiet:
        service, _, rpc = method.lstrip("/").partition("/")
        status = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
        _RPC_DURATION.record(
            time.perf_counter() - started,
            {
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": rpc,
                "rpc.grpc.status_code": status.value[0],
            },
        )
    log.log(
        level,
        "rpc",
        extra={
            "rpc": method,
            "code": name,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        },
    )


def _require_scopes(names: Sequence[str]) -> None:
    """Fail closed at start: every method served behind authentication is unary or server
    streaming (the two kinds the edge guards) and has a scope in METHOD_SCOPES, so no new
    RPC is open to everyone by omission."""
    pool = descriptor_pool.Default()
    for name in names:
        for method in pool.FindServiceByName(name).methods:
            path = f"/{name}/{method.name}"
            if method.client_streaming or path not in METHOD_SCOPES:
                raise RuntimeError(
                    f"{path} is served without a scope: add it to METHOD_SCOPES "
                    "(imagery.common.grpc.auth); client-streaming methods need a guard of "
                    "their own in ErrorMappingInterceptor."
                )


class GrpcServer:
    """A started server with its health servicer; `serve_until_signal` runs it to SIGTERM."""

    def __init__(
        self,
        services: Sequence[ServiceRegistration],
        *,
        grace_seconds: float = 10.0,
        authenticator: Authenticates | None = None,
        reflection_enabled: bool = True,
        tls: TlsFiles | None = None,
        health_port: int | None = None,
        max_concurrent_rpcs: int | None = None,
        max_connection_age_ms: int | None = None,
        max_connection_age_grace_ms: int = 30_000,
        rate_limits: RateLimits | None = None,
    ) -> None:
        """`tls` (e.g. the `Settings`) names the certificate files; without a certificate the
        port is plaintext. Unusable files raise `ConfigError` here, before anything listens.
        `health_port` adds a plaintext port that serves health alone: kubelet gRPC probes
        speak neither TLS nor mTLS. Past `max_concurrent_rpcs` calls at once (health aside)
        a call answers RESOURCE_EXHAUSTED `SERVER_BUSY` with a retry delay instead of
        queueing; connections close after `max_connection_age_ms` (plus a grace for calls in
        flight), so clients balancing over a headless Service find new pods."""
        self.grace_seconds = grace_seconds
        self._credentials = server_credentials(tls) if tls is not None else None
        self.health = HealthServicer()
        self.interceptor = ErrorMappingInterceptor(
            authenticator, max_concurrent_rpcs=max_concurrent_rpcs, rate_limits=rate_limits
        )
        self._rate_limits = rate_limits
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        options: list[tuple[str, int]] = [
            ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            # Keepalive, enforced: clients may ping every 10 s, idle or not; more often, and
            # after two strikes the server closes the connection. The server pings idle
            # clients every minute and drops the ones that do not answer in 20 s.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 2),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
        ]
        if max_connection_age_ms is not None:
            options += [
                ("grpc.max_connection_age_ms", max_connection_age_ms),
                ("grpc.max_connection_age_grace_ms", max_connection_age_grace_ms),
            ]
        self.server = grpc.aio.server(interceptors=[self.interceptor], options=options)
        self._names = [s.name for s in services]
        if authenticator is not None:
            _require_scopes(self._names)
        for service in services:
            service.add_to_server(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if reflection_enabled:
            reflection.enable_server_reflection(
                [
                    *self._names,
                    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                    reflection.SERVICE_NAME,
                ],
                self.server,
            )
        self.port = 0
        self._health_port = health_port
        self.health_port: int | None = None  # bound, once started
        self._health_server: grpc.aio.Server | None = None
        if health_port is not None:
            self._health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)

    @classmethod
    def for_service(
        cls,
        services: Sequence[ServiceRegistration],
        settings: Settings,
        authenticator: Authenticates,
    ) -> GrpcServer:
        """A service's server as its settings say: authentication, rate limits, reflection,
        TLS, the health port, and the limits that shed load."""
        return cls(
            services,
            authenticator=authenticator,
            reflection_enabled=settings.grpc_reflection,
            tls=settings,
            health_port=settings.grpc_health_port,
            max_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
            max_connection_age_ms=settings.grpc_max_connection_age_ms,
            max_connection_age_grace_ms=settings.grpc_max_connection_age_grace_ms,
            rate_limits=RateLimits(settings.project_policy, settings.redis_url),
        )

    async def start(self, port: int, host: str = "[::]") -> int:
        address = f"{host}:{port}"
        if self._credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, self._credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on {host}:{port}: is another process using GRPC_PORT?")
        await self.server.start()
        if self._health_server is not None:
            bound = self._health_server.add_insecure_port(f"{host}:{self._health_port}")
            if bound == 0:
                raise OSError(f"cannot listen on {host}:{self._health_port} (GRPC_HEALTH_PORT)")
            self.health_port = bound
            await self._health_server.start()
        for name in ["", *self._names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "grpc server listening",
            extra={
                "port": self.port,
                "services": self._names,
                "tls": self._credentials is not None,
            },
        )
        return self.port

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Await `callback` when stopping, once health says NOT_SERVING and before the
        drain: for what must end its calls itself, such as streams that would otherwise hold
        the shutdown for the whole grace."""
        self._on_stop.append(callback)

    async def stop(self) -> None:
        """Health NOT_SERVING first (load balancers stop sending), then the `on_stop`
        callbacks, then drain within the grace."""
        await self.health.enter_graceful_shutdown()
        for callback in self._on_stop:
            await callback()
        await self.server.stop(self.grace_seconds)
        if self._health_server is not None:
            await self._health_server.stop(0)
        if self._rate_limits is not None:
            await self._rate_limits.close()

    async def serve_until_signal(self) -> None:
        await stop_on_signals().wait()
        log.info("shutting down", extra={"grace_seconds": self.grace_seconds})
        await self.stop()
