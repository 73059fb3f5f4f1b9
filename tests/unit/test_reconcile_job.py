"""The reconcile operator job around the processor's reconciler: it runs the pass with the
operator's options, beats at its own pace, stops when another processor took the job over,
and keeps counts and examples of each finding as the job's result."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, cast

from imagery.processor.ports import AdminJob, ReconcileOptions
from imagery.processor.use_cases.reconcile import Progress, Reconciler, Report
from imagery.processor.use_cases.reconcile_job import EXAMPLES, ReconcileJob

JOB = AdminJob(7, "reconcile", "bucket", "cli:ops", "claim-1")


class FakeReconcileJobs:
    def __init__(self, options: ReconcileOptions | None, *, ours_for: int = 1000) -> None:
        self.options = options
        self.ours_for = ours_for  # progress calls answered True before the job is taken over
        self.beats: list[int] = []
        self.finished: Mapping[str, object] | None = None

    async def begin(self, job: AdminJob) -> ReconcileOptions | None:
        return self.options

    async def progress(self, job: AdminJob, *, done: int) -> bool:
        self.beats.append(done)
        return len(self.beats) <= self.ours_for

    async def ready_images_of(
        self, sha256s: Collection[str], *, limit: int
    ) -> tuple[int, list[str]]:
        return 3 * len(sha256s), [f"image-of-{s}" for s in sorted(sha256s)][:limit]

    async def finish(self, job: AdminJob, result: Mapping[str, object]) -> None:
        self.finished = result


class StubReconciler:
    """Reports what it is given, telling `progress` of `contents` checked contents."""

    def __init__(self, report: Report, contents: int = 5) -> None:
        self.report = report
        self.contents = contents
        self.calls: list[dict[str, Any]] = []

    async def run(
        self, *, dry_run: bool, remove_orphans: bool, progress: Progress | None = None
    ) -> Report:
        self.calls.append({"dry_run": dry_run, "remove_orphans": remove_orphans})
        assert progress is not None
        await progress(0)  # a page listed
        for _ in range(self.contents):
            await progress(1)
        return self.report


def _job(reconciler: StubReconciler, jobs: FakeReconcileJobs, beat: float = 0) -> ReconcileJob:
    ticks = iter(range(10_000))
    return ReconcileJob(
        cast(Reconciler, reconciler), jobs, beat_seconds=beat, clock=lambda: next(ticks)
    )


async def test_the_pass_runs_with_the_operators_options_and_keeps_counts_and_examples() -> None:
    orphans = [f"originals/{i:064x}" for i in range(EXAMPLES + 2)]
    report = Report(
        orphans_kept=orphans,
        orphans_in_grace=["variants/young/small.webp"],
        originals_restored=["originals/aa"],
        variants_rebuilt=["variants/aa/small.webp", "variants/aa/thumb.jpg"],
        content_lost=["bb"],
        versioning="Enabled",
        grace_seconds=3600,
    )
    reconciler = StubReconciler(report)
    jobs = FakeReconcileJobs(ReconcileOptions(dry_run=False, remove_orphans=False))
    await _job(reconciler, jobs)(JOB)

    assert reconciler.calls == [{"dry_run": False, "remove_orphans": False}]
    result = jobs.finished
    assert result is not None
    assert result["orphans"] == {"count": EXAMPLES + 2, "examples": orphans[:EXAMPLES]}
    assert result["orphans_removed"] == {"count": 0, "examples": []}
    assert result["originals_restored"] == {"count": 1, "examples": ["originals/aa"]}
    assert result["content_lost"] == {
        "count": 1,
        "examples": ["bb"],
        "images": 3,
        "image_examples": ["image-of-bb"],
    }
    assert (result["versioning"], result["grace_seconds"]) == ("Enabled", 3600)
    assert jobs.beats[-1] == 5, "the contents checked, recorded before the result"


async def test_a_job_taken_over_stops_at_its_next_beat_and_finishes_nothing() -> None:
    reconciler = StubReconciler(Report(), contents=50)
    jobs = FakeReconcileJobs(ReconcileOptions(dry_run=True, remove_orphans=True), ours_for=2)
    await _job(reconciler, jobs, beat=1)(JOB)
    assert len(jobs.beats) == 3, "it stopped at the first refused beat"
    assert jobs.finished is None


async def test_beats_wait_for_their_interval() -> None:
    reconciler = StubReconciler(Report(), contents=20)
    jobs = FakeReconcileJobs(ReconcileOptions(dry_run=True, remove_orphans=False))
    await _job(reconciler, jobs, beat=10)(JOB)
    # The clock ticks once per reading: a beat every few contents, not one per content.
    assert 1 < len(jobs.beats) < 10, jobs.beats
    assert jobs.finished is not None


async def test_a_job_no_longer_ours_is_not_run() -> None:
    reconciler = StubReconciler(Report())
    jobs = FakeReconcileJobs(None)
    await _job(reconciler, jobs)(JOB)
    assert reconciler.calls == [] and jobs.finished is None
