"""OpenTelemetry, configured once per process in bootstrap; everything else calls
`trace.get_tracer(__name__)` / `metrics.get_meter(__name__)`.

Traces: gRPC server spans and asyncpg statement spans from the standard instrumentations,
S3/SQS call spans from botocore's own call events (no instrumentation covers aiobotocore),
exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (standard `OTEL_*` variables).
Metrics: served for Prometheus on `METRICS_PORT` when set, and over OTLP when configured.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

_configured = False


def configure_telemetry(
    service: str,
    *,
    metrics_port: int | None = None,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> None:
    """Idempotent per process. Tests pass in-memory processors/readers."""
    global _configured
    if _configured:
        return
    _configured = True
    resource = Resource.create(
        {"service.name": f"imagery-{service}", "service.namespace": "imagery"}
    )
    tracer_provider = TracerProvider(resource=resource)
    for processor in span_processors:
        tracer_provider.add_span_processor(processor)
    readers = list(metric_readers)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if metrics_port is not None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server

        readers.append(PrometheusMetricReader())
        start_http_server(metrics_port)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorServer

    GrpcAioInstrumentorServer().instrument()  # type: ignore[no-untyped-call]  # servers created later are traced
    AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]


def current_trace_context() -> str | None:
    """The current W3C traceparent, to join an asynchronous hop later (None outside a span)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id in a W3C traceparent (`00-<trace id>-<span id>-<flags>`)."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def link_to(traceparent: str | None) -> list[Link]:
    """A span link to the trace a stored traceparent names (empty when there is none)."""
    if not traceparent:
        return []
    span_context = trace.get_current_span(
        propagate.extract({"traceparent": traceparent})
    ).get_span_context()
    return [Link(span_context)] if span_context.is_valid else []


def trace_aws_calls(client: Any) -> None:
    """A CLIENT span per S3/SQS API call of this (aio)botocore client, with the AWS SDK
    semantic attributes. Presigning makes no call, so signed URLs never reach a span."""
    tracer = trace.get_tracer("imagery.aws")
    events = client.meta.events
    service = str(client.meta.service_model.service_id)  # "S3", "SQS": semantic-convention names

    def before(model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        attributes = {
            "rpc.system": "aws-api",
            "rpc.service": service,
            "rpc.method": model.name,
            "cloud.region": client.meta.region_name or "",
        }
        if "Bucket" in params:
            attributes["aws.s3.bucket"] = params["Bucket"]
        if "Key" in params:
            attributes["aws.s3.key"] = params["Key"]
        if "QueueUrl" in params:
            attributes["aws.sqs.queue.url"] = params["QueueUrl"]
        span = tracer.start_span(
            f"{service}.{model.name}", kind=SpanKind.CLIENT, attributes=attributes
        )
        context["imagery_span"] = span
        context["imagery_token"] = otel_context.attach(trace.set_span_in_context(span))

    def after(
        http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        _finish(context, parsed.get("ResponseMetadata", {}), None)

    def error(
        exception: BaseException | None = None, context: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if context is not None:
            _finish(context, {}, exception)

    events.register("before-call", before)
    events.register("after-call", after)
    events.register("after-call-error", error)


def _finish(context: dict[str, Any], metadata: dict[str, Any], error: BaseException | None) -> None:
    span = context.pop("imagery_span", None)
    token = context.pop("imagery_token", None)
    if span is None:
        return
    if metadata.get("RequestId"):
        span.set_attribute("aws.request_id", metadata["RequestId"])
    if metadata.get("HTTPStatusCode"):
        span.set_attribute("http.response.status_code", metadata["HTTPStatusCode"])
        if metadata["HTTPStatusCode"] >= 500:
            span.set_status(Status(StatusCode.ERROR))
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()
    if token is not None:
        with contextlib.suppress(ValueError):  # detached elsewhere: the span ended all the same
            otel_context.detach(token)
