"""TakedownJob with small fakes: every address of the bytes is swept, only content that
existed is invalidated (one wildcard per variant folder), and without a distribution the
result says why nothing was invalidated."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from imagery.processor.ports import AdminJob, Invalidation
from imagery.processor.use_cases.takedown import TakedownJob

SHA = "ab" * 32
HERE, THERE, NEVER = "1" * 64, "2" * 64, "3" * 64


@dataclass
class FakeRecords:
    rows: set[str]
    finished: list[Mapping[str, object]] = field(default_factory=list)
    ours: bool = True

    async def begin(self, job: AdminJob) -> bool:
        return self.ours

    async def addresses(self, sha256: str) -> list[str]:
        return [HERE, THERE, NEVER]

    async def forget_content(self, addresses: Collection[str]) -> list[str]:
        gone = [a for a in addresses if a in self.rows]
        self.rows -= set(gone)
        return gone

    async def finish(self, job: AdminJob, result: Mapping[str, object]) -> None:
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

    async def invalidate(self, paths: Sequence[str], *, reference: str) -> Invalidation:
        self.asked.append((tuple(paths), reference))
        return Invalidation("I1", tuple(paths))


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
    assert bucket.versions == {}
    assert cdn.asked == [((f"/variants/{HERE}/*", f"/variants/{THERE}/*"), "imagery-takedown-7")]
    (result,) = records.finished
    assert result["contents"] == 2 and result["object_versions_deleted"] == 6
    assert result["invalidation"] == {
        "id": "I1",
        "paths": [f"/variants/{HERE}/*", f"/variants/{THERE}/*"],
    }


async def test_without_a_distribution_it_deletes_and_says_why_it_invalidated_nothing() -> None:
    records = FakeRecords(rows=set())
    bucket = FakeBucket({f"originals/{HERE}": 1})
    await TakedownJob(records, bucket, None)(_job())
    (result,) = records.finished
    assert result["invalidation"] is None
    assert result["invalidation_skipped"] == "CLOUDFRONT_DISTRIBUTION_ID is not set"
    assert bucket.versions == {}


async def test_a_job_taken_over_does_nothing() -> None:
    records = FakeRecords(rows={HERE}, ours=False)
    bucket = FakeBucket({f"originals/{HERE}": 1})
    cdn = FakeCdn()
    await TakedownJob(records, bucket, cdn)(_job())
    assert bucket.versions and records.rows == {HERE} and not cdn.asked and not records.finished
