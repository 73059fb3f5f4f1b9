"""TakedownJob with small fakes: every address of the bytes is swept, only content that
existed is invalidated (one wildcard per variant folder, at most 15 per request), a run cut
short goes on from what it saved, and without a distribution the result says why nothing
was invalidated."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from imagery.common.errors import DependencyUnavailable
from imagery.processor.ports import AdminJob, Invalidation
from imagery.processor.use_cases.takedown import TakedownJob

SHA = "ab" * 32
HERE, THERE, NEVER = "1" * 64, "2" * 64, "3" * 64


@dataclass
class FakeRecords:
    rows: set[str]
    addressed: list[str] = field(default_factory=lambda: [HERE, THERE, NEVER])
    blocked: bool = True
    saved: dict[str, Any] = field(default_factory=dict)
    finished: list[Mapping[str, Any]] = field(default_factory=list)
    ours: bool = True

    async def begin(self, job: AdminJob) -> Mapping[str, Any] | None:
        return dict(self.saved) if self.ours else None

    async def save(self, job: AdminJob, state: Mapping[str, Any]) -> bool:
        self.saved = dict(state)
        return self.ours

    async def still_blocked(self, sha256: str) -> bool:
        return self.blocked

    async def addresses(self, sha256: str) -> list[str]:
        return list(self.addressed)

    async def with_rows(self, addresses: Collection[str]) -> list[str]:
        return [a for a in addresses if a in self.rows]

    async def forget_content(self, addresses: Collection[str]) -> list[str]:
        gone = [a for a in addresses if a in self.rows]
        self.rows -= set(gone)
        return gone

    async def finish(self, job: AdminJob, result: Mapping[str, Any]) -> None:
        self.finished.append(result)


@dataclass
class FakeBucket:
    versions: dict[str, int]

    async def delete_every_version(self, prefix: str) -> int:
        found = sum(n for key, n in self.versions.items() if key.startswith(prefix))
        self.versions = {k: n for k, n in self.versions.items() if not k.startswith(prefix)}
        return found


@dataclass
class FakeCdn:
    asked: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    busy: int = 0  # requests refused before it accepts (CloudFront: too many in progress)

    async def invalidate(self, paths: Sequence[str], *, reference: str) -> Invalidation:
        if self.busy:
            self.busy -= 1
            raise DependencyUnavailable("CloudFront CreateInvalidation failed: retry shortly.")
        self.asked.append((tuple(paths), reference))
        return Invalidation(f"I{len(self.asked)}", tuple(paths))


def _job() -> AdminJob:
    return AdminJob(7, "takedown", SHA, "key:admin", "claim")


async def test_every_version_goes_and_only_what_existed_is_invalidated() -> None:
    records = FakeRecords(rows={THERE})  # a tombstone whose objects the collector removed
    bucket = FakeBucket(
        {
            f"originals/{HERE}": 2,
            f"variants/{HERE}/thumbnail.webp": 3,
            f"variants/{HERE}/v2/a.jpg": 1,
        }
    )
    cdn = FakeCdn()
    await TakedownJob(records, bucket, cdn)(_job())
    assert bucket.versions == {} and records.rows == set()
    assert cdn.asked == [((f"/variants/{HERE}/*", f"/variants/{THERE}/*"), "imagery-takedown-7-0")]
    (result,) = records.finished
    assert result["contents"] == 2 and result["object_versions_deleted"] == 6
    assert result["invalidations"] == [
        {"id": "I1", "paths": [f"/variants/{HERE}/*", f"/variants/{THERE}/*"]}
    ]


async def test_a_run_cut_short_after_deleting_still_invalidates_what_it_found() -> None:
    records = FakeRecords(rows={HERE})
    bucket = FakeBucket({f"originals/{HERE}": 1, f"variants/{HERE}/a.webp": 1})
    cdn = FakeCdn(busy=1)
    job = TakedownJob(records, bucket, cdn)
    with pytest.raises(DependencyUnavailable):
        await job(_job())  # everything deleted, then CloudFront refused
    assert bucket.versions == {} and records.rows == set() and not records.finished
    await job(_job())  # claimed again: nothing left to delete, the invalidation still due
    assert cdn.asked == [((f"/variants/{HERE}/*",), "imagery-takedown-7-0")]
    (result,) = records.finished
    assert result["contents"] == 1 and result["object_versions_deleted"] == 2


async def test_many_contents_are_invalidated_fifteen_wildcards_at_a_time() -> None:
    addresses = [f"{n:064x}" for n in range(40)]
    records = FakeRecords(rows=set(addresses), addressed=addresses)
    cdn = FakeCdn()
    await TakedownJob(records, FakeBucket({}), cdn)(_job())
    assert [len(paths) for paths, _ in cdn.asked] == [15, 15, 10]
    assert [ref for _, ref in cdn.asked] == [f"imagery-takedown-7-{n}" for n in range(3)]


async def test_without_a_distribution_it_deletes_and_says_why_it_invalidated_nothing() -> None:
    records = FakeRecords(rows=set())
    bucket = FakeBucket({f"originals/{HERE}": 1})
    await TakedownJob(records, bucket, None)(_job())
    (result,) = records.finished
    assert "invalidations" not in result
    assert result["invalidation_skipped"] == "CLOUDFRONT_DISTRIBUTION_ID is not set"
    assert bucket.versions == {}


async def test_bytes_unblocked_before_the_job_ran_are_left_alone() -> None:
    records = FakeRecords(rows={HERE}, blocked=False)
    bucket = FakeBucket({f"originals/{HERE}": 1})
    cdn = FakeCdn()
    await TakedownJob(records, bucket, cdn)(_job())
    assert bucket.versions and records.rows == {HERE} and not cdn.asked
    assert records.finished == [{"sha256": SHA, "skipped": "unblocked before the takedown ran"}]


async def test_a_job_taken_over_does_nothing() -> None:
    records = FakeRecords(rows={HERE}, ours=False)
    bucket = FakeBucket({f"originals/{HERE}": 1})
    cdn = FakeCdn()
    await TakedownJob(records, bucket, cdn)(_job())
    assert bucket.versions and records.rows == {HERE} and not cdn.asked and not records.finished
