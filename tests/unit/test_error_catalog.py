"""The error catalog has one source of truth: every reason the code can raise or record is an
`imagery.v1.ErrorReason` value, has a status (call errors), and is documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grpc

from imagery.common import errors
from imagery.common.grpc.errors import STATUS_TABLE
from imagery.v1 import errors_pb2

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "ERROR_REASON_"
ENUM = {
    name.removeprefix(PREFIX)
    for name in errors_pb2.ErrorReason.keys()  # noqa: SIM118 - an enum wrapper, not a dict
    if name != f"{PREFIX}UNSPECIFIED"
}


def _conditions() -> list[type[errors.ImageryError]]:
    found, todo = [], [errors.ImageryError]
    while todo:
        kind = todo.pop()
        base = kind.__mro__[1]
        grouping = kind is not errors.ImageryError and kind.reason == getattr(base, "reason", None)
        if not grouping:  # a base that only groups conditions (Unauthenticated) has no reason
            found.append(kind)
        todo.extend(kind.__subclasses__())
    return found


def test_every_condition_has_a_reason_in_the_enum_and_a_status() -> None:
    for condition in _conditions():
        assert condition.reason in ENUM, f"{condition.__name__}.reason {condition.reason}"
        if condition is not errors.ImageryError:
            assert any(k in STATUS_TABLE for k in condition.__mro__[:-2]), (
                f"{condition.__name__} has no status"
            )


def test_each_condition_names_its_own_reason() -> None:
    reasons = [c.reason for c in _conditions()]
    assert len(reasons) == len(set(reasons))


def test_every_failure_reason_is_in_the_enum_and_none_is_retired() -> None:
    recorded = {reason.value for reason in errors.FailureReason}
    assert recorded <= ENUM
    assert not recorded & set(errors.RETIRED_REASONS)


def test_every_value_is_used_or_retired() -> None:
    used = {c.reason for c in _conditions()} | set(errors.FailureReason)
    assert used | set(errors.RETIRED_REASONS) == ENUM


def test_the_processor_records_failure_reasons_only_through_the_enum() -> None:
    """A reason written as a bare string at a raise site would escape the checks above."""
    for path in (ROOT / "services/processor/src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            args = {"Rejected": node.args[:1], "_fail": node.args[2:3]}.get(name, [])
            args += [k.value for k in node.keywords if k.arg == "failure_reason"]
            bare = [a.value for a in args if isinstance(a, ast.Constant)]
            assert bare == [], f"{path.name}: {bare} as a string; use FailureReason"


def test_every_value_is_documented_in_the_proto_and_the_readme() -> None:
    proto = (ROOT / "protos/imagery/v1/errors.proto").read_text().splitlines()
    for number, line in enumerate(proto):
        if re.match(rf"\s*{PREFIX}\w+ = \d+;", line):
            assert proto[number - 1].strip().startswith("//"), f"undocumented: {line.strip()}"
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Errors") :]
    section = section[: section.index("\n## ", 3)]
    missing = [reason for reason in sorted(ENUM) if f"`{reason}`" not in section]
    assert missing == [], f"README's Errors section does not mention {missing}"


def test_the_status_table_uses_canonical_codes_only() -> None:
    assert set(STATUS_TABLE.values()) <= set(grpc.StatusCode)
