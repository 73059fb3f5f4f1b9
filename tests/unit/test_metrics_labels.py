"""Labels whose values tenants choose stay bounded per process."""

from __future__ import annotations

from imagery.common.metrics import BoundedLabel


def test_past_its_limit_a_label_reads_other_and_known_values_keep_their_name() -> None:
    project = BoundedLabel(limit=3)
    assert [project(p) for p in ("a", "b", "c", "d", "a", "e", "c")] == [
        "a",
        "b",
        "c",
        "other",
        "a",
        "other",
        "c",
    ]
