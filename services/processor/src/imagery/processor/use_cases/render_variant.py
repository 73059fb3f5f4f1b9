"""One claimed ask for a render after ingest (a lazy preset's first request, or a backfill):
render one preset of one content from its kept original, in an isolated job, at the
project's current profile version.

An ask is answered against the project's profile *now*, not the one it was made under:
- its preset left the profile, or its version is newer than the project's: dropped;
- its version is older and the preset is still there: the current version's preset is
  rendered instead (a URL is served from the newest version, and a backfill asks for the
  current one anyway), unless another ask already asks for that;
- the preset has a variant row at that version already: the ask is dropped. Asks are claimed
  one at a time, so this check is what keeps one rendering from being made twice.
A kept original that no longer passes its job (or is gone) drops the ask, logged and
counted; transient trouble leaves it claimed, retaken after a backoff; an ask claimed more
than `max_attempts` times is dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import time

from opentelemetry import metrics, trace

from imagery.common.domain import VariantInfo
from imagery.common.formats import content_type_of
from imagery.common.metrics import PROCESSING_SECONDS
from imagery.common.presets import Preset
from imagery.common.profiles import VariantProfile, default_profile
from imagery.common.storage_keys import (
    GLOBAL_SCOPE,
    VARIANT_CACHE_CONTROL,
    original_key,
    variant_key,
)
from imagery.processor.imaging import Limits, Rejected, Rendered, RenderSpec
from imagery.processor.ports import ImageJobs, Objects, ObjectTooLarge, RetryLater
from imagery.processor.render_ports import RenderRequest, RenderRequests
from imagery.processor.use_cases.store_content import note_over_budget

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


class RenderOutcome(enum.Enum):
    RENDERED = "rendered"
    EXISTS = "exists"  # rendered already, or asked for at the current version: ask dropped
    MOVED = "moved"  # an older version's ask: asked again at the current version
    DROPPED = "dropped"  # the preset left the profile, or the content or project went
    REJECTED = "rejected"  # the kept original no longer passes its job
    LOST = "lost"  # the kept original is gone
    EXHAUSTED = "exhausted"  # claimed more often than allowed
    RETRY = "retry"  # transient trouble: retaken after a backoff
    RELEASED = "released"  # shutdown: due again at once


_METER = metrics.get_meter(__name__)
_RENDERS = _METER.create_counter(
    "imagery.processor.renders", description="Renders after ingest by outcome and source"
)
_DURATION = _METER.create_histogram(
    "imagery.processor.render.duration",
    unit="s",
    description="Time to answer one render ask, by outcome and source",
    explicit_bucket_boundaries_advisory=PROCESSING_SECONDS,
)


class RenderVariant:
    def __init__(
        self,
        requests: RenderRequests,
        objects: Objects,
        jobs: ImageJobs,
        *,
        limits: Limits,
        spec: RenderSpec,
        max_original_bytes: int,
        max_attempts: int = 5,
        stale_after_seconds: float,
        retry_base_seconds: float = 5,
    ) -> None:
        self._requests = requests
        self._objects = objects
        self._jobs = jobs
        self._limits = limits
        self._spec = spec  # encoder settings; its presets are the default profile (v0)
        self._default = default_profile(spec.presets)
        self._max_original = max_original_bytes
        self._max_attempts = max_attempts
        self._stale_after = stale_after_seconds
        self._retry_base = retry_base_seconds

    async def __call__(self, request: RenderRequest) -> RenderOutcome:
        started = time.perf_counter()
        with tracer.start_as_current_span("render variant") as span:
            span.set_attribute("imagery.preset", request.preset)
            span.set_attribute("imagery.render.source", request.source)
            outcome = await self._guarded(request)
            span.set_attribute("imagery.outcome", outcome.value)
        labels = {"outcome": outcome.value, "source": request.source}
        elapsed_ms = (time.perf_counter() - started) * 1000
        _RENDERS.add(1, labels)
        _DURATION.record(elapsed_ms / 1000, labels)
        if outcome is RenderOutcome.RENDERED:
            log.info("variant rendered", extra={**_facts(request), "ms": round(elapsed_ms, 1)})
        return outcome

    async def _guarded(self, request: RenderRequest) -> RenderOutcome:
        try:
            return await self._answer(request)
        except asyncio.CancelledError:
            await asyncio.shield(self._release(request))
            raise
        except Exception as exc:  # noqa: BLE001 - anything else is retried, up to max_attempts
            backoff = min(self._stale_after, self._retry_base * 2 ** (request.attempts - 1))
            log.warning(
                "render failed: retrying later",
                extra={
                    "sha256": request.sha256,
                    "preset": request.preset,
                    "attempts": request.attempts,
                    "retry_in_seconds": backoff,
                    "error": f"{type(exc).__name__}: {exc}",
                },
            )
            await self._requests.retry_later(
                request, after_seconds=backoff, stale_after_seconds=self._stale_after
            )
            return RenderOutcome.RETRY

    async def _release(self, request: RenderRequest) -> None:
        try:
            await self._requests.release(request)
        except Exception as exc:  # noqa: BLE001 - stopping anyway: retaken once it is stale
            log.warning("could not release a render claim", extra={"error": str(exc)})

    async def _answer(self, request: RenderRequest) -> RenderOutcome:
        if request.attempts > self._max_attempts:
            log.warning("render ask dropped after too many attempts", extra=_facts(request))
            await self._requests.drop(request, failed=True)
            return RenderOutcome.EXHAUSTED
        source = await self._requests.source(request)
        profile = (source.profile if source else None) or self._default
        preset = profile.preset(request.preset)
        if source is None or preset is None or request.version > profile.version:
            await self._requests.drop(request, failed=False)
            return RenderOutcome.DROPPED
        if request.version < profile.version:
            await self._requests.move(request, profile.version)
            return RenderOutcome.MOVED
        if await self._requests.covered(request, profile.version):
            await self._requests.drop(request, failed=False)
            return RenderOutcome.EXISTS
        return await self._render(request, source.format, profile, preset)

    async def _render(
        self, request: RenderRequest, fmt: str, profile: VariantProfile, preset: Preset
    ) -> RenderOutcome:
        data = await self._original(request)
        if data is None:
            await self._requests.drop(request, failed=True)
            return RenderOutcome.LOST
        spec = dataclasses.replace(self._spec, presets=(preset,))
        try:
            job = await self._jobs.verify_and_render(data, content_type_of(fmt), self._limits, spec)
        except Rejected as rejected:
            if rejected.by_the_kernel and request.attempts < 2:
                raise RetryLater(f"the kernel killed the job ({rejected.detail})") from None
            log.warning(
                "render ask dropped: the kept original no longer passes",
                extra={**_facts(request), "reason": rejected.reason, "detail": rejected.detail},
            )
            await self._requests.drop(request, failed=True)
            return RenderOutcome.REJECTED
        variants = await self._store(request, profile.version, job.processed.variants)
        wanted = [(p.name, f) for p in profile.at_ingest for f in p.formats]
        if await self._requests.complete(request, profile.version, variants, wanted) is None:
            # The content went while it rendered. Its objects are left to the reconciler: the
            # same bytes uploaded again meanwhile may have written these very keys.
            log.info(
                "render ask dropped: the content went while it rendered", extra=_facts(request)
            )
            return RenderOutcome.DROPPED
        note_over_budget(request.sha256, job.processed.variants)
        return RenderOutcome.RENDERED

    async def _original(self, request: RenderRequest) -> bytes | None:
        """The kept original, or None (logged) when it is gone or larger than allowed now."""
        key = original_key(GLOBAL_SCOPE, request.sha256)
        try:
            data = await self._objects.get(key, max_bytes=self._max_original)
        except ObjectTooLarge as too_large:
            log.warning(
                "render ask dropped: the kept original is over the size ceiling now",
                extra={**_facts(request), "size_bytes": too_large.size},
            )
            return None
        if data is None:
            log.warning("render ask dropped: the kept original is gone", extra=_facts(request))
        return data

    async def _store(
        self, request: RenderRequest, version: int, rendered: tuple[Rendered, ...]
    ) -> list[VariantInfo]:
        """Each output at its versioned key: immutable, never written for another version."""
        variants = [
            VariantInfo(
                v.name,
                v.format,
                v.content_type,
                v.width,
                v.height,
                len(v.body),
                variant_key(GLOBAL_SCOPE, request.sha256, v.name, v.format, version),
                version,
                over_budget=v.over_budget,
            )
            for v in rendered
        ]
        await asyncio.gather(
            *(
                self._objects.put(
                    info.key,
                    v.body,
                    content_type=v.content_type,
                    cache_control=VARIANT_CACHE_CONTROL,
                )
                for info, v in zip(variants, rendered, strict=True)
            )
        )
        return variants


def _facts(request: RenderRequest) -> dict[str, object]:
    return {
        "sha256": request.sha256,
        "preset": request.preset,
        "profile_version": request.version,
        "source": request.source,
        "attempts": request.attempts,
    }
